"""Where an uploaded file lands in a job, and which paths may be asked for."""

from __future__ import annotations

import io
import tarfile

import pytest

from freight_server.services.runner.files import tar_of_one
from freight_server.shared.job_paths import InvalidPath, input_destination, requested_path


@pytest.mark.parametrize(
    ("name", "destination"),
    [
        ("data.csv", "/job/data.csv"),
        ("sub/dir/x.bin", "/job/sub/dir/x.bin"),
        ("./a//b/./c", "/job/a/b/c"),
        ("/tmp/file.png", "/tmp/file.png"),
        ("//opt/x", "/opt/x"),
    ],
)
def test_a_name_is_its_destination(name, destination):
    assert input_destination(name, "/job") == destination


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("", "empty"),
        ("a\x00b", "NUL"),
        ("../etc/passwd", "'..'"),
        ("a/../../b", "'..'"),
        ("n" * 4097, "4096 bytes"),
        ("dir/", "directory"),
        ("/", "directory"),
        ("/.freight/stdout", "/.freight"),
        ("/proc/self/x", "/proc"),
    ],
)
def test_bad_names_say_what_is_wrong(name, words):
    with pytest.raises(InvalidPath, match=words):
        input_destination(name, "/job")


def test_a_destination_past_the_limit_is_refused_even_if_the_name_is_not():
    with pytest.raises(InvalidPath, match="4096"):
        input_destination("n" * 4095, "/job")


@pytest.mark.parametrize(
    ("path", "normal"), [("/job", "/job"), ("/job/", "/job"), ("/", "/"), ("//a/./b", "/a/b")]
)
def test_requested_paths_are_normalized(path, normal):
    assert requested_path(path) == normal


@pytest.mark.parametrize(
    ("path", "words"),
    [(None, "required"), ("", "required"), ("job/x", "absolute"), ("/a/../b", "'..'")],
)
def test_bad_requested_paths_are_refused(path, words):
    with pytest.raises(InvalidPath, match=words):
        requested_path(path)


def test_an_input_archive_holds_exactly_the_file():
    content = [b"abc", b"defg"]
    archive = b"".join(tar_of_one("/job/deep/name.txt", 7, content, mtime=1_700_000_000))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        (member,) = tar.getmembers()
        assert member.name == "job/deep/name.txt" and member.size == 7
        assert member.mode == 0o644 and member.mtime == 1_700_000_000
        assert tar.extractfile(member).read() == b"abcdefg"
