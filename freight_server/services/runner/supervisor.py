"""The local executor's supervisor: one process per runner that starts the runner's commands and
records, for each, its output and its exit code, so that both outlive the runner that asked.

It runs as a script (`python -I supervisor.py`), importing only the standard library. The runner
writes one JSON request a line to its stdin:

    {"name": ..., "dir": <attempt directory>, "command": ..., "env": {...}, "cwd": ...}

and reads one JSON line back for each: `{"name", "pid"}` once the command runs (its `pid` file
written), or `{"name", "error"}` if it could not start; then `{"name", "exit_code"}` once it
ended and its exit code is recorded. Each command is `sh -c <command>` in a session of its own
(a stop reaches it and its children, never the supervisor), stdin /dev/null, stdout and stderr
pipes whose writes are framed into the attempt's `output` in the order read: one byte for the
stream (1 or 2), four for the length, then the bytes, as the Docker engine frames its logs.

The attempt's `pid` file holds the command's pid and start time, then the supervisor's: a runner
that restarts finds a command alive by the first pair, and one whose exit code is still being
recorded by the second. When its stdin closes (the runner is gone) the supervisor takes no more
requests, and ends once its last command has.
"""

import json
import os
import select
import signal
import sys

READ = 65536
STOPPED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE, signal.SIGXFSZ)


class Attempt:
    def __init__(self, name, directory, pid, streams, output):
        self.name = name
        self.directory = directory
        self.pid = pid
        self.streams = streams  # read end -> stream number
        self.output = output
        self.code = None
        self.unwritable = False  # its output could not be written (a full disk): dropped


def main():
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # the runner's stop is not its commands' stop
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that a child's end wakes poll
    me = f"{os.getpid()} {started_at(os.getpid()) or '-'}"
    replies = Replies(sys.stdout.fileno())
    requests = Requests(sys.stdin.fileno())
    poller = select.poll()
    poller.register(requests.fd, select.POLLIN)
    poller.register(wake_read, select.POLLIN)
    by_pid = {}
    by_fd = {}
    while requests.open or by_pid:
        for fd, _ in poller.poll():
            if fd == wake_read:
                os.read(wake_read, 4096)
            elif fd == requests.fd:
                for request in requests.read():
                    attempt = start(request, me, replies)
                    if attempt is not None:
                        by_pid[attempt.pid] = attempt
                        for stream in attempt.streams:
                            by_fd[stream] = attempt
                            poller.register(stream, select.POLLIN)
                if not requests.open:
                    poller.unregister(requests.fd)
            elif fd in by_fd:
                attempt = by_fd[fd]
                data = os.read(fd, READ)
                if data:
                    frame(attempt, fd, data)
                else:
                    close_stream(attempt, fd, poller, by_fd)
        for attempt in reap(by_pid):
            # It ended: what it left in its pipes is read now; a background process that keeps
            # them open is no reason to wait (it is killed when the attempt is removed).
            for fd in list(attempt.streams):
                drain(attempt, fd)
                close_stream(attempt, fd, poller, by_fd)
            os.close(attempt.output)
            record(attempt.directory, "exit_code", str(attempt.code))
            replies.send({"name": attempt.name, "exit_code": attempt.code})


def start(request, me, replies):
    name, directory = request["name"], request["dir"]
    try:
        output = os.open(
            os.path.join(directory, "output"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600
        )
    except OSError as exc:
        replies.send({"name": name, "error": str(exc)})
        return None
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    try:
        # One thread: the working directory set here is the one the command is spawned in.
        os.chdir(request["cwd"])
        pid = os.posix_spawnp(
            "sh",
            ["sh", "-c", request["command"]],
            request["env"],
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, out_write, 1),
                (os.POSIX_SPAWN_DUP2, err_write, 2),
            ],
            setsid=True,
            setsigdef=STOPPED + (signal.SIGCHLD,),
        )
    except (OSError, ValueError, TypeError) as exc:
        for fd in (out_read, out_write, err_read, err_write, output):
            os.close(fd)
        replies.send({"name": name, "error": str(exc)})
        return None
    finally:
        os.chdir("/")
    os.close(out_write)
    os.close(err_write)
    record(directory, "pid", f"{pid} {started_at(pid) or '-'} {me}")
    replies.send({"name": name, "pid": pid})
    return Attempt(name, directory, pid, {out_read: 1, err_read: 2}, output)


def reap(by_pid):
    """The attempts whose command ended since the last look, their exit codes set."""
    ended = []
    while by_pid:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        attempt = by_pid.pop(pid, None)
        if attempt is not None:
            code = os.waitstatus_to_exitcode(status)
            attempt.code = 128 - code if code < 0 else code
            ended.append(attempt)
    return ended


def frame(attempt, fd, data):
    if attempt.unwritable:
        return
    header = bytes([attempt.streams[fd]]) + len(data).to_bytes(4, "big")
    view = memoryview(header + data)
    try:
        while view:
            view = view[os.write(attempt.output, view) :]
    except OSError as exc:
        attempt.unwritable = True
        print(f"{attempt.name}: output no longer kept: {exc}", file=sys.stderr, flush=True)


def drain(attempt, fd):
    os.set_blocking(fd, False)
    while True:
        try:
            data = os.read(fd, READ)
        except BlockingIOError:
            return
        if not data:
            return
        frame(attempt, fd, data)


def close_stream(attempt, fd, poller, by_fd):
    if fd in by_fd:
        poller.unregister(fd)
        del by_fd[fd]
    if attempt.streams.pop(fd, None) is not None:
        os.close(fd)


def record(directory, name, text):
    path = os.path.join(directory, name)
    try:
        with open(path + ".tmp", "w") as out:
            out.write(text)
        os.replace(path + ".tmp", path)
    except OSError as exc:  # its directory removed under it: nobody is left to read it
        print(f"could not record {path}: {exc}", file=sys.stderr, flush=True)


def started_at(pid):
    """A live process's start time (in clock ticks since boot), from /proc; None for none, or
    for a zombie. With its pid it names the process: a pid reused since starts at another time.
    (The runner's side, local.py, compares them with this same function.)"""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # The command name, in parentheses, may hold spaces: the fields follow its last ")".
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    state, start_time = fields[0], fields[19]  # stat's 3rd and 22nd fields
    return None if state == "Z" else start_time


class Requests:
    def __init__(self, fd):
        self.fd = fd
        self.open = True
        self._pending = b""

    def read(self):
        data = os.read(self.fd, READ)
        if not data:
            self.open = False
        self._pending += data
        *lines, self._pending = self._pending.split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]


class Replies:
    def __init__(self, fd):
        self._fd = fd
        self._open = True

    def send(self, reply):
        if not self._open:
            return
        data = memoryview((json.dumps(reply) + "\n").encode())
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError:  # the runner is gone; its successor reads the attempts' files
            self._open = False


if __name__ == "__main__":
    main()
