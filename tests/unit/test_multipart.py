"""The SDK's streamed multipart body, read back by falcon's parser as the API reads it."""

from __future__ import annotations

import io

import falcon
import falcon.testing

from freight.multipart import MultipartBody, Upload


class Echo:
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        parts = [(p.name, p.filename, p.stream.read()) for p in req.get_media()]
        resp.media = [[name, filename, data.decode("latin-1")] for name, filename, data in parts]


def parse(body: MultipartBody) -> list[list[str]]:
    app = falcon.App()
    app.add_route("/", Echo())
    sent = b"".join(body)
    assert body.length is None or len(sent) == body.length
    response = falcon.testing.TestClient(app).simulate_post(
        "/", body=sent, headers={"Content-Type": body.content_type}
    )
    assert response.status_code == 200, response.text
    return response.json


def test_fields_then_files_with_exact_length_and_destinations_kept(tmp_path):
    local = tmp_path / "a.bin"
    local.write_bytes(bytes(range(256)) * 1000)
    sent: list[int] = []
    body = MultipartBody(
        [("command", "sh run.sh"), ("env", "A=1"), ("env", "B=2")],
        [
            Upload(local, "in/a.bin"),
            Upload(io.BytesIO(b"x" * 10), '/data/naïve "quoted".txt'),
        ],
        sent.append,
    )
    assert parse(body) == [
        ["command", None, "sh run.sh"],
        ["env", None, "A=1"],
        ["env", None, "B=2"],
        ["file[]", "in/a.bin", local.read_bytes().decode("latin-1")],
        ["file[]", '/data/naïve "quoted".txt', "x" * 10],
    ]
    assert sum(sent) == body.length


def test_a_stream_of_unknown_size_is_sent_without_a_length():
    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self._left = [b"abc", b"def"]

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            return self._left.pop(0) if self._left else b""

        def seekable(self) -> bool:
            return False

        def tell(self) -> int:
            raise OSError("not seekable")

    body = MultipartBody([], [Upload(Pipe(), "p.txt")])  # type: ignore[arg-type]
    assert body.length is None
    assert parse(body) == [["file[]", "p.txt", "abcdef"]]
