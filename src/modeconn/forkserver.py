"""A fork server for the workflow's jobs: every `modeconn` job starts with its imports already done.

Each Snakemake job is a `modeconn <command>` process. As a fresh process it spends 1.4-2.7 s on a
2-core machine importing torch, pandas, scipy, matplotlib and seaborn before any work: a quarter
of the default run. Under a local Snakemake run one server process (`python -m modeconn.forkserver
SOCKET`, started in the Snakefile's `onstart`, stopped in `onsuccess` and `onerror`, logging to
logs/fork-server.log) imports the package and everything its commands import, once. A job's
`modeconn` command is then a thin client (this module's `entry`, standard library only): it sends
the server its arguments, working directory, environment, umask and its standard input, output and
error (file descriptors, over a Unix socket); the server forks; the child takes them on and runs
the command as `modeconn.cli.entry` would in a fresh process; the client relays signals to it and
ends with its exit status (or by its signal). Computation, outputs and logs are the same.

Why a job stays the same job:
- the server only imports; it computes nothing, starts no torch or OpenMP thread pool and never
  touches CUDA, so each child starts from a fresh interpreter's state after its imports;
- the child gets the client's environment, working directory, umask, stdio and argv, and dies
  with the client (the server kills it when the client's connection closes: Snakemake cancelling
  or killing a job) and with the server (PR_SET_PDEATHSIG);
- libraries that read the environment when they are loaded keep the server's reading: the server
  runs OpenBLAS (numpy's, scipy's ARPACK) on one thread, as the curvature rule asks for and as
  every job of the default run has one thread.

When the client runs the command itself instead (the same as without a server): no server
address in the environment (a command typed by hand), nothing listening there (not
started yet, stopped, another machine), another Python installation or PYTHONPATH than the
server's (a conda environment of `--software-deployment-method conda`), or a Slurm allocation
(`SLURM_JOB_ID` set: the job must run inside it). `MODECONN_FORK_SERVER=off` in the environment
keeps the Snakefile from starting a server.

Linux only (file-descriptor passing, pidfd, PR_SET_PDEATHSIG); elsewhere no server starts.

Protocol on one connection per job: client → server: 4-byte length + 3 file descriptors, then the
JSON request; server → client: b"S" + pid once forked (no b"S": nothing ran, the client runs the
command itself); client → server: b"K" + signal number to relay; server → client: b"E" + the
child's wait status.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys

ADDRESS_ENV = "MODECONN_FORK_SERVER"  # the server's socket path, in the jobs' environment; "off": no server
OFF = "off"
# Commands that must run in their own process: the journal's drainer outlives any one job.
_OWN_PROCESS = ("drain-journal",)
_RELAYED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
_INT = struct.Struct("!i")


def available() -> bool:
    """Whether this platform can run the server (Linux: fd passing, pidfd_open, PR_SET_PDEATHSIG)."""
    if sys.platform != "linux" or not hasattr(os, "pidfd_open") or not hasattr(socket, "send_fds"):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))  # the kernel has it (Linux ≥ 5.3)
    except OSError:
        return False
    return True


# ----------------------------------------------------------------------------- client


def entry() -> None:
    """The `modeconn` console command: through the fork server when there is one, else `cli.entry`."""
    address = os.environ.get(ADDRESS_ENV, "")
    argv = sys.argv[1:]
    served = address not in ("", OFF) and argv and argv[0] not in _OWN_PROCESS
    if served and not os.environ.get("SLURM_JOB_ID") and available():
        status = _through_server(address, argv)
        if status is not None:
            _end_as(status)
    from .cli import entry as run_here

    run_here()


def _through_server(address: str, argv: list[str]) -> int | None:
    """Run the command in a child of the server; its wait status, or None if nothing ran there."""
    pending: list[int] = []  # signals that came before the child existed
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

    def relay(signum, frame):
        if not started:
            pending.append(signum)
        else:
            _send_quietly(sock, b"K" + _INT.pack(signum))

    started = False
    before = {s: signal.signal(s, relay) for s in _RELAYED}
    try:
        sock.connect(address)
        umask = os.umask(0)
        os.umask(umask)
        request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "umask": umask,
                              "prefix": sys.prefix}).encode()
        socket.send_fds(sock, [_INT.pack(len(request))], [_usable(fd) for fd in (0, 1, 2)])
        sock.sendall(request)
        reply = _read(sock, 1 + _INT.size)
    except OSError:
        reply = b""
    if len(reply) < 1 + _INT.size or reply[:1] != b"S":
        sock.close()
        for s, handler in before.items():  # nothing ran: this process runs the command, as it would have
            signal.signal(s, handler)
        for s in pending:
            signal.raise_signal(s)
        return None
    started = True
    for s in pending:
        relay(s, None)
    reply = _read(sock, 1 + _INT.size)
    if len(reply) < 1 + _INT.size or reply[:1] != b"E":
        print(f"modeconn: the fork server ({address}) ended while it ran `modeconn {' '.join(argv)}`", file=sys.stderr)
        return 1 << 8  # as if the command exited 1
    return _INT.unpack(reply[1:])[0]


def _usable(fd: int) -> int:
    """`fd`, or /dev/null in its place when it is closed (the child gets what a fresh process would)."""
    try:
        os.fstat(fd)
        return fd
    except OSError:
        return os.open(os.devnull, os.O_RDWR)


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        try:
            chunk = sock.recv(n - len(data))
        except OSError:  # the other end is gone (reset)
            break
        if not chunk:
            break
        data += chunk
    return data


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass


def _end_as(status: int) -> None:
    """Exit as the child did: its exit code, or killed by its signal."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status))


# ----------------------------------------------------------------------------- server


class _Stop(Exception):
    pass


def _stop(signum, frame):
    raise _Stop()


def preload() -> list[str]:
    """Import what the jobs import: the CLI, every family's modules and the core maths (whose own
    imports bring torch, pandas, scipy, matplotlib with its Agg backend, seaborn). Returns their names."""
    import importlib
    import pkgutil

    from . import cli, core, families  # noqa: F401

    names = [info.name for package in (families, core) for info in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
    names += [f"{__package__}.{m}" for m in ("consolidated", "data", "journal", "tracking", "figures")]
    # torch imports torch._dynamo (0.9 s) at the first optimizer step or torch.func.grad call:
    # every training, curvature and AutoNEB job
    names.append("torch._dynamo")
    for name in names:
        importlib.import_module(name)
    return names


def serve(address: str, log=print) -> None:
    """Preload, listen on `address` and fork one child per job until SIGTERM or the parent exits."""
    import selectors

    signal.signal(signal.SIGTERM, _stop)
    # Ctrl-C reaches the whole process group: the jobs stop, Snakemake's onerror then stops the server
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    modules = preload()
    import torch

    if torch.cuda.is_initialized():  # a forked child could not use CUDA then
        raise RuntimeError("CUDA was initialised while the fork server imported the package; run with MODECONN_FORK_SERVER=off")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    temporary = f"{address}.{os.getpid()}"
    listener.bind(temporary)
    listener.listen(64)
    os.rename(temporary, address)  # clients see the socket only once it accepts
    log(f"fork server {os.getpid()}: {len(modules)} modules imported; listening on {address}")
    jobs: dict[socket.socket, tuple[int, int]] = {}  # connection -> (child pid, pidfd)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "accept")
    try:
        while os.getppid() == parent:
            for key, _ in sel.select(timeout=1.0):
                if key.data == "accept":
                    _accept(listener, sel, jobs, log)
                elif key.data[0] == "client":
                    _from_client(key.fileobj, jobs, sel)
                else:
                    _reap(key.data[1], jobs, sel, log)
    except _Stop:
        pass
    finally:
        for pid, _ in jobs.values():
            _kill(pid, signal.SIGKILL)
        try:
            os.unlink(address)
        except OSError:
            pass
        log(f"fork server {os.getpid()}: stopped ({len(jobs)} jobs still running were killed)")


def _accept(listener: socket.socket, sel, jobs: dict, log) -> None:
    import selectors

    conn, _ = listener.accept()
    fds: list[int] = []
    try:
        conn.settimeout(10)
        head, fds, _, _ = socket.recv_fds(conn, _INT.size, 3)
        if len(head) < _INT.size or len(fds) != 3:
            raise OSError("incomplete request")
        request = json.loads(_read(conn, _INT.unpack(head)[0]))
        _check_peer(conn)
        _check_same_python(request)
    except (OSError, ValueError, KeyError, TypeError) as err:
        log(f"fork server: request refused ({err}): the client runs the command itself")
        for fd in fds:
            os.close(fd)
        conn.close()
        return
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # or the child would write the server's buffered lines again
    # The child must not run the server's handlers (SIGTERM stops the server): signals wait, blocked,
    # until it has the default ones.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _RELAYED)  # the mask before blocking
    server = os.getpid()
    pid = os.fork()
    if pid == 0:
        # Whatever happens, the child never returns into the server's loop (it would act as the server).
        try:
            _child(request, fds, [listener, conn, *jobs], [pidfd for _, pidfd in jobs.values()], mask, server)
        except KeyboardInterrupt:
            os._exit(130)
        except BaseException:  # noqa: BLE001
            import traceback

            traceback.print_exc()
        finally:
            os._exit(1)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    for fd in fds:
        os.close(fd)
    conn.settimeout(None)
    pidfd = os.pidfd_open(pid)
    jobs[conn] = (pid, pidfd)
    sel.register(conn, selectors.EVENT_READ, ("client", pid))
    sel.register(pidfd, selectors.EVENT_READ, ("exit", conn))
    _send_quietly(conn, b"S" + _INT.pack(pid))
    log(f"fork server: pid {pid}: modeconn {' '.join(request['argv'][:1])} ({request['cwd']})")


def _check_peer(conn: socket.socket) -> None:
    """Only the server's own user may run commands through it."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    if uid != os.getuid():
        raise OSError(f"connection from uid {uid}")


def _check_same_python(request: dict) -> None:
    """The child has the server's modules and import path: only a client of the same Python
    installation and PYTHONPATH gets what a fresh process of its own would import."""
    if request["prefix"] != sys.prefix or request["env"].get("PYTHONPATH") != os.environ.get("PYTHONPATH"):
        raise ValueError(f"another Python or PYTHONPATH ({request['prefix']})")


def _from_client(conn: socket.socket, jobs: dict, sel) -> None:
    """A signal to relay, or the client is gone (cancelled, killed): then the child goes too."""
    pid, _ = jobs[conn]
    try:
        data = conn.recv(1 + _INT.size)
    except OSError:
        data = b""
    if data[:1] == b"K" and len(data) == 1 + _INT.size:
        _kill(pid, _INT.unpack(data[1:])[0])
    elif not data:
        sel.unregister(conn)
        _kill(pid, signal.SIGKILL)


def _reap(conn: socket.socket, jobs: dict, sel, log) -> None:
    pid, pidfd = jobs.pop(conn)
    _, status = os.waitpid(pid, 0)
    sel.unregister(pidfd)
    os.close(pidfd)
    try:
        sel.unregister(conn)
    except (KeyError, ValueError):
        pass
    _send_quietly(conn, b"E" + _INT.pack(status))
    conn.close()
    log(f"fork server: pid {pid}: exit status {os.waitstatus_to_exitcode(status)}")


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _child(request: dict, fds: list[int], sockets: list[socket.socket], pidfds: list[int], mask, server: int) -> None:
    """In the forked child: become the client's process, run the command, never return."""
    import ctypes

    for s in _RELAYED:
        signal.signal(s, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a fresh interpreter
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the server
    if os.getppid() != server:  # it died before that
        os._exit(1)
    for s in sockets:
        s.close()
    for fd in pidfds:
        os.close(fd)
    for target, fd in zip((0, 1, 2), fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.umask(request["umask"])
    sys.argv = ["modeconn", *request["argv"]]
    from .cli import entry as run_here

    run_here()  # ends with os._exit


# ----------------------------------------------------------------------------- workflow side


def start(log) -> tuple[object, str] | None:
    """Start `modeconn fork-server` in the background and point this process's future children (the
    workflow's jobs) at it; None where it cannot run or MODECONN_FORK_SERVER=off. The socket lives
    in a fresh private (0700) directory under the temporary folder: Unix socket paths are short."""
    import subprocess
    import tempfile

    if os.environ.get(ADDRESS_ENV) == OFF or not available():
        return None
    folder = tempfile.mkdtemp(prefix="modeconn-")
    address = os.path.join(folder, "fork.sock")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    env.pop(ADDRESS_ENV, None)
    os.makedirs(os.path.dirname(os.path.abspath(log)), exist_ok=True)
    with open(log, "a") as out:
        proc = subprocess.Popen([sys.executable, "-m", "modeconn.forkserver", address], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env)
    os.environ[ADDRESS_ENV] = address
    return proc, address


def stop(server: tuple[object, str] | None) -> None:
    """Stop the server (children still running are killed), remove its socket folder."""
    import shutil
    import subprocess

    if server is None:
        return
    proc, address = server
    os.environ.pop(ADDRESS_ENV, None)
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:  # it must not outlive the workflow
        proc.kill()
    shutil.rmtree(os.path.dirname(address), ignore_errors=True)


if __name__ == "__main__":
    serve(sys.argv[1], log=lambda line: print(line, flush=True))
