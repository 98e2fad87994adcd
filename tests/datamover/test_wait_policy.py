"""``waitfor(..., policy=)`` on the local backend: real commands that fail a number of times
are run again (``Handle.again``) as the exit policy says, within its bounds; ``complete``,
``fail`` and ``check``; other futures are waited for as they are.

Through Slurm (``retry_elsewhere`` keeping the retry off the node) see
``tests/slurm/test_multinode.py``.
"""

from __future__ import annotations

import concurrent.futures
import io
import time

import pytest

from taurus_tools import CommandError, ConfigurationError, Datamover, ExitPolicy, waitfor

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_slurm_env")]


@pytest.fixture
def dm():
    return Datamover("local")


def failing(dm, tmp_path, codes, name="attempts"):
    """A command that exits with ``codes[n]`` on its n-th run (0 after them) and counts its runs
    in a file; stderr says which run it is."""
    counter = tmp_path / name
    script = (
        'n=$(cat "$1" 2>/dev/null || echo 0); echo $((n + 1)) > "$1"; echo "run $((n + 1))" >&2; '
        'code=$(echo "$2" | awk -v i=$((n + 1)) \'{print $i}\'); exit "${code:-0}"'
    )
    return dm.run("sh", "-c", script, "sh", str(counter), " ".join(map(str, codes))), counter


def runs(counter) -> int:
    return int(counter.read_text())


def test_retry_runs_the_command_again_until_it_succeeds(dm, tmp_path):
    handle, counter = failing(dm, tmp_path, [3, 3])
    err = io.StringIO()
    started = time.monotonic()
    assert waitfor(handle, policy="3=retry,backoff=0.2", progress=False, file=err) == 0
    assert runs(counter) == 3
    assert time.monotonic() - started >= 0.2 + 0.4  # the backoff doubles
    assert handle.returncode == 3  # the handle given is the first attempt's
    text = err.getvalue()
    assert "exit 3: retry 1 in 0.2 s (rule 3=retry)" in text and "retry 2 in 0.4 s" in text
    assert "run 1" in text and "run 3" in text  # every attempt's stderr is shown


def test_retries_per_command_are_bounded(dm, tmp_path):
    handle, counter = failing(dm, tmp_path, [3] * 10)
    err = io.StringIO()
    assert waitfor(handle, policy="*=retry,retries=2,backoff=0", progress=False, file=err) == 3
    assert runs(counter) == 3
    assert "no retry left (rule *=retry)" in err.getvalue()
    with pytest.raises(CommandError) as info:
        waitfor(failing(dm, tmp_path, [4] * 10, "again")[0], policy="*=retry,retries=1,backoff=0", check=True,
                progress=False, show_stderr=False)  # fmt: skip
    assert info.value.returncode == 4


def test_retries_of_a_wait_are_bounded_in_all(dm, tmp_path):
    first, one = failing(dm, tmp_path, [3] * 10, "one")
    second, two = failing(dm, tmp_path, [3] * 10, "two")
    codes = waitfor([first, second], policy="3=retry,retries=5,run_retries=3,backoff=0", progress=False,
                    show_stderr=False)  # fmt: skip
    assert codes == [3, 3]
    assert runs(one) + runs(two) == 2 + 3


def test_fail_and_complete_are_final_and_check_follows_the_policy(dm, tmp_path):
    failed, failed_runs = failing(dm, tmp_path, [5, 0], "failed")
    done, done_runs = failing(dm, tmp_path, [6, 0], "done")
    policy = ExitPolicy("5=fail,6=complete,*=retry,backoff=0")
    with pytest.raises(CommandError) as info:
        waitfor([failed, done], policy=policy, check=True, progress=False, show_stderr=False)
    assert info.value.returncode == 5
    assert runs(failed_runs) == 1
    done2, done2_runs = failing(dm, tmp_path, [6, 0], "done2")
    assert waitfor(done2, policy=policy, check=True, progress=False, show_stderr=False) == 6  # complete: no error
    assert runs(done_runs) == 1 and runs(done2_runs) == 1


def test_signals_and_retry_elsewhere_without_nodes(dm, tmp_path):
    counter = tmp_path / "killed"
    script = 'if [ -e "$1" ]; then exit 0; fi; touch "$1"; kill -9 $$'
    handle = dm.run("sh", "-c", script, "sh", str(counter))
    err = io.StringIO()
    assert waitfor(handle, policy="SIGKILL=retry_elsewhere,backoff=0", progress=False, file=err) == 0
    assert handle.returncode == -9
    assert "SIGKILL: its nodes are not ours to choose; retried without excluding any" in err.getvalue()


def test_other_futures_are_waited_for_as_they_are(dm, tmp_path):
    future: concurrent.futures.Future = concurrent.futures.Future()
    future.set_exception(RuntimeError("broken"))
    handle, counter = failing(dm, tmp_path, [3])
    assert waitfor([future, handle], policy="*=retry,backoff=0", progress=False, show_stderr=False) == [1, 0]
    assert runs(counter) == 2


def test_a_bad_policy_is_refused_before_waiting(dm):
    handle = dm.run("true")
    with pytest.raises(ConfigurationError, match="unknown exit-policy action 'later'"):
        waitfor(handle, policy="1=later")
    with pytest.raises(ConfigurationError, match="policy must be an ExitPolicy or its compact form"):
        waitfor(handle, policy=3)  # type: ignore[arg-type]
    assert waitfor(handle, progress=False) == 0
