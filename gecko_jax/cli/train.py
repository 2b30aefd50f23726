"""``gecko-jax train --config FILE [--set key=value ...] --workdir DIR [--distributed [--coordinator HOST:PORT
--num-processes N --process-id I]]``.

Multi-host: start the same command once per host (process). ``--distributed`` alone lets JAX find the cluster
(Cloud TPU VMs, SLURM, Open MPI, Kubernetes, or ``JAX_COORDINATOR_ADDRESS``/``JAX_NUM_PROCESSES``/``JAX_PROCESS_ID``);
elsewhere name it: the coordinator is process 0's host and a free port, the same on every process.
"""
from __future__ import annotations

import argparse
import sys

from gecko_jax.errors import InputError, exit_codes_help


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = exit_codes_help((0, 1, 2, 3, 4, 5, 143))
    p.add_argument("--config", required=True, help="JSON config file (see experiments/configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set optimizer.learning_rate=1e-4 (value parsed as JSON)")
    p.add_argument("--workdir", required=True, help="output folder; an existing run there is resumed")
    p.add_argument("--distributed", action="store_true",
                   help="multi-process run: call jax.distributed.initialize() first (same as --set distributed=true);"
                        " the cluster is detected on Cloud TPU, SLURM, Open MPI and Kubernetes")
    p.add_argument("--coordinator", metavar="HOST:PORT",
                   help="with --distributed: address of process 0 (a free port on its host), the same everywhere")
    p.add_argument("--num-processes", type=int, metavar="N", help="with --distributed: how many processes in all")
    p.add_argument("--process-id", type=int, metavar="I", help="with --distributed: this process's rank, 0..N-1")


def run(args: argparse.Namespace) -> int:
    """Bad data (exit 2), config errors (3), unrestorable checkpoints (4) and unwritable outputs (5) propagate as
    ``gecko_jax.errors`` types; ``gecko_jax.cli.main`` prints them as one line."""
    from gecko_jax.train.config import load_config

    config = load_config(args.config, args.overrides)
    named = [args.coordinator, args.num_processes, args.process_id]
    if any(v is not None for v in named) and not (args.distributed or config.distributed):
        raise InputError("--coordinator/--num-processes/--process-id need --distributed")
    if args.distributed or config.distributed:
        from gecko_jax.train.distributed import initialize

        initialize(*named)  # before any other JAX call: it fixes the process's view of the devices
    from gecko_jax.train.loop import NonFiniteLossError, train_and_evaluate

    try:
        result = train_and_evaluate(config, args.workdir)
    except NonFiniteLossError as e:
        print(f"gecko-jax train: error: {e}", file=sys.stderr)
        return 1
    if result.preempted:
        return 143  # 128 + SIGTERM: stopped early with a checkpoint; rerun the same command to resume
    summary = {k: round(v, 6) for k, v in result.last_metrics.items()}
    print(f"[train] done: step {int(result.state.step)} from {result.origin}; {summary}"
          + (f"; eval {result.eval_metrics}" if result.eval_metrics else "")
          + (f"; exported to {result.export_dir}" if result.export_dir else ""), flush=True)
    return 0
