"""Checkpoints: a folder saved to ``s3://`` or another folder every N seconds while work runs.

:class:`~taurus_tools.checkpoint.checkpoint.Checkpoint` runs the passes;
:func:`~taurus_tools.checkpoint.restore.restore` brings back the newest complete one;
:mod:`~taurus_tools.checkpoint.command` runs a command under a checkpoint (the CLI's
``taurus-tools checkpoint``).
"""
