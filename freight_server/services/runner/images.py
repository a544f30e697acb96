"""The images this runner pulled, and their pruning: an image none of its jobs used for
FREIGHT_RUNNER_IMAGE_PRUNE_AFTER seconds is removed from the host. Images it did not pull (an
operator's, another tool's) are never looked at, nor is FREIGHT_DEFAULT_IMAGE, nor an image a
container was created from."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta
from typing import Protocol

import sqlalchemy as sa

from freight_server.services.runner import schema
from freight_server.services.runner.executor import ExecutorError, ImageInUse

log = logging.getLogger(__name__)

# A use is written at most this often per image: pruning counts in hours, and a write per job
# would cost each job a commit.
TOUCH_EVERY = timedelta(seconds=60)
NEVER = datetime.min.replace(tzinfo=UTC)


class ImageStore(Protocol):
    """The engine's images, as far as pruning needs them (DockerExecutor)."""

    def images_in_use(self) -> set[str]:
        """The names and ids of the images that containers, running or not, were created from."""

    def remove_image(self, image: str) -> None:
        """Remove this name, never forced; ImageInUse if a container needs the image. An image
        already gone is removed."""


class PulledImages:
    """This runner's record (table runner_images) of the images it pulled and when a job of
    its own last used each (to within TOUCH_EVERY)."""

    def __init__(self, engine: sa.Engine, runner_id: str, clock: Callable[[], datetime]):
        self._engine = engine
        self._runner_id = runner_id
        self._clock = clock
        self._touched: dict[str, datetime] | None = None  # pulled images: the use last written

    def pulled(self, image: str) -> None:
        now = self._clock()
        with self._engine.begin() as connection:
            if not self._touch(connection, image, now):
                connection.execute(
                    schema.images.insert().values(
                        runner_id=self._runner_id, image=image, pulled_at=now, last_used_at=now
                    )
                )
        self._known()[image] = now

    def used(self, image: str, at: datetime | None = None) -> None:
        """A job of ours used it: written if we pulled it and its last use written is older
        than TOUCH_EVERY, or at once when `at` is given (the pruner's own finding)."""
        touched = self._known()
        if image not in touched:
            return
        now = at or self._clock()
        if at is None and now - touched[image] < TOUCH_EVERY:
            return
        with self._engine.begin() as connection:
            self._touch(connection, image, now)
        touched[image] = now

    def unused_since(self, cutoff: datetime) -> list[str]:
        with self._engine.connect() as connection:
            return list(
                connection.execute(
                    sa.select(schema.images.c.image).where(
                        schema.images.c.runner_id == self._runner_id,
                        schema.images.c.last_used_at < cutoff,
                    )
                ).scalars()
            )

    def forget(self, image: str) -> None:
        with self._engine.begin() as connection:
            connection.execute(schema.images.delete().where(*self._row(image)))
        self._known().pop(image, None)

    def _known(self) -> dict[str, datetime]:
        if self._touched is None:
            images = schema.images.c
            with self._engine.connect() as connection:
                pulled = connection.execute(
                    sa.select(images.image).where(images.runner_id == self._runner_id)
                ).scalars()
                self._touched = dict.fromkeys(pulled, NEVER)  # the first use is written
        return self._touched

    def _touch(self, connection: sa.Connection, image: str, at: datetime) -> bool:
        update = schema.images.update().where(*self._row(image)).values(last_used_at=at)
        return connection.execute(update).rowcount > 0

    def _row(self, image: str) -> list[sa.ColumnElement[bool]]:
        return [schema.images.c.runner_id == self._runner_id, schema.images.c.image == image]


class ImagePruner:
    def __init__(
        self,
        images: PulledImages,
        store: ImageStore,
        keep_for: float,
        protected: Collection[str],
        clock: Callable[[], datetime],
    ):
        self._images = images
        self._store = store
        self._keep_for = timedelta(seconds=keep_for)
        self._protected = frozenset(protected)
        self._clock = clock

    def prune(self) -> list[str]:
        """Remove the pulled images unused for longer than `keep_for`; returns their names."""
        now = self._clock()
        stale = self._images.unused_since(now - self._keep_for)
        candidates = [image for image in stale if image not in self._protected]
        if not candidates:
            return []
        in_use = self._store.images_in_use()
        return [image for image in candidates if self._prune_one(image, in_use, now)]

    def _prune_one(self, image: str, in_use: set[str], now: datetime) -> bool:
        if image in in_use:
            # Its container counts as a use: its clock starts again once that container is gone.
            self._images.used(image, now)
            return False
        try:
            self._store.remove_image(image)
        except ImageInUse:
            self._images.used(image, now)
            return False
        except ExecutorError as exc:
            log.warning("could not prune image %s (will try again): %s", image, exc)
            return False
        log.info("pruned image %s, unused for %gs", image, self._keep_for.total_seconds())
        self._images.forget(image)
        return True
