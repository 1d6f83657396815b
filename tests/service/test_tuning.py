"""SQUALL_* tuning knobs: malformed or unknown names stop the start, naming the variable."""

from __future__ import annotations

import pytest

from squall.blobs.options import BlobOptions
from squall.firehose.options import FirehoseOptions
from squall.tuning import TuningError
from tests.helpers.pds import PdsProcess


def test_values_are_read_and_checked():
    opts = FirehoseOptions.from_env({"SQUALL_FIREHOSE_PING_SECONDS": "0", "SQUALL_FIREHOSE_QUEUE_FRAMES": "10"})
    assert opts.ping_seconds == 0 and opts.queue_frames == 10
    with pytest.raises(TuningError, match="^SQUALL_FIREHOSE_QUEUE_FRAMES: must be greater than zero"):
        FirehoseOptions.from_env({"SQUALL_FIREHOSE_QUEUE_FRAMES": "0"})
    with pytest.raises(TuningError, match="^SQUALL_BLOBS_S3_MAX_ATTEMPTS: 'three' is not a whole number"):
        BlobOptions.from_env({"SQUALL_BLOBS_S3_MAX_ATTEMPTS": "three"})


def test_unknown_knob_is_refused():
    with pytest.raises(TuningError, match="^SQUALL_FIREHOSE_PING_SECOND: unknown setting"):
        FirehoseOptions.from_env({"SQUALL_FIREHOSE_PING_SECOND": "5"})


def test_server_refuses_to_start_with_a_bad_knob(tmp_path):
    proc = PdsProcess(tmp_path / "data", env_extra={"SQUALL_BLOBS_GC_INTERVAL_SECOND": "1"})
    with pytest.raises(RuntimeError) as info:
        proc.start(timeout=15)
    assert "SQUALL_BLOBS_GC_INTERVAL_SECOND" in str(info.value)
