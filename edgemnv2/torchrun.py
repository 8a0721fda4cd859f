"""`python -m edgemnv2.torchrun ARGS`: torchrun, with torchrun's arguments, exiting with edgemnv2's codes.

torchrun exits 1 whenever a rank fails, whatever that rank's own exit code, after a ChildFailedError
report: under it, bad input (2) and an internal error (3) look like a failed gate (1) to CI. This runs
torchrun's own launcher (torch.distributed.run) and exits with the failing rank's code instead. That
rank has printed its one line; the other ranks exit with the same code and print nothing
(edgemnv2.distributed.report_failure / peer_failure), so the user sees one line and the right code:

    python -m edgemnv2.torchrun --standalone --nproc-per-node 4 -m edgemnv2 validate --checkpoint C ...

A rank killed by a signal (the kernel's OOM killer, say) exits 128 + the signal's number, as a shell
reports it, with one line naming the rank.
"""

import logging
import sys


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # its per-process lines ("failed (exitcode: 2) local_rank: 1 ...", "Sending process ... SIGTERM")
    # repeat what the rank said and what the exit code says
    logging.getLogger("torch.distributed.elastic.multiprocessing.api").setLevel(logging.CRITICAL)
    try:
        run(parse_args(argv))
    except ChildFailedError as exc:
        return failed_rank_code(exc.failures)
    except SignalException as exc:  # Ctrl-C or SIGTERM to this launcher: the ranks were stopped with it
        return 128 + int(exc.sigval)
    return 0


def failed_rank_code(failures: dict) -> int:
    """The exit code of the rank that failed first, among the ranks that exited (torchrun terminates
    the others, which then show a signal: not the cause)."""
    exited = sorted(((failure.timestamp, rank) for rank, failure in failures.items() if failure.exitcode > 0))
    if exited:
        return failures[exited[0][1]].exitcode
    rank = min(failures, key=lambda r: (failures[r].timestamp, r))
    failure = failures[rank]
    print(f"edgemnv2: rank {rank} was killed by {failure.signal_name()}", file=sys.stderr)
    return 128 - failure.exitcode


if __name__ == "__main__":
    sys.exit(main())
