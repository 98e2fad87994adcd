"""Talking to Slurm: the client (squeue, scontrol, sacct, scancel), srun's output, one shared job watcher."""
