"""Beam pipeline options and the runner, for the Beam jobs and the Beam data stage alike.

Standard Beam options pass through unchanged (``--runner``, ``--temp_location``,
``--project``, ``--direct_num_workers``, ``--flink_master``, ``--dask_client_address``, ...;
``--runner=DaskRunner`` is short for Beam's ``apache_beam.runners.dask.dask_runner.DaskRunner``).
Without ``--runner`` (or with ``--runner=DirectRunner``) a pipeline runs locally on Beam's
FnApiRunner in **multi-process** mode with 2 workers: hermetic, nothing downloaded. (Beam
2.77's DirectRunner would first try the Prism runner, which downloads a binary; we call the
FnApiRunner directly instead.) :func:`run_and_report` runs a pipeline and prints its counters.
Lives in the library, below ``pipelines/`` and ``recsys_ssl.datasets``, which both use it.
"""

from __future__ import annotations

import sys
import time
from typing import Sequence

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

LOCAL_RUNNERS = (None, "DirectRunner", "FnApiRunner", "direct")
# Runners Beam does not know by their short name (docs/cluster.md).
RUNNER_ALIASES = {"DaskRunner": "apache_beam.runners.dask.dask_runner.DaskRunner"}
DEFAULT_NUM_WORKERS = 2


def pipeline_options(beam_args: Sequence[str]) -> PipelineOptions:
    """Beam options from the arguments the job did not recognise, with local defaults."""
    beam_args = list(beam_args)
    if PipelineOptions(beam_args).view_as(StandardOptions).runner in LOCAL_RUNNERS:
        if not any(a.startswith("--default_sdk_harness_log_level") for a in beam_args):
            beam_args.append("--default_sdk_harness_log_level=ERROR")  # local workers: counters, not chatter
    options = PipelineOptions(beam_args)
    standard = options.view_as(StandardOptions)
    standard.runner = RUNNER_ALIASES.get(standard.runner, standard.runner)
    direct = options.view_as(DirectOptions)
    if standard.runner in LOCAL_RUNNERS:
        if not any(a.startswith("--direct_running_mode") for a in beam_args):
            direct.direct_running_mode = "multi_processing"
            if not any(a.startswith("--direct_num_workers") for a in beam_args):
                direct.direct_num_workers = DEFAULT_NUM_WORKERS
    return options


def make_runner(options: PipelineOptions):
    """The runner the options name: locally the FnApiRunner (never Prism), else None (Beam picks it)."""
    if options.view_as(StandardOptions).runner not in LOCAL_RUNNERS:
        return None
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    # As DirectRunner does: hand the options to the worker processes (log level, ...).
    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    provision = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return fn_runner.FnApiRunner(provision_info=provision)


def counters(result) -> dict[str, int]:
    """The job's Beam counters (name -> committed or attempted value)."""
    out: dict[str, int] = {}
    try:
        query = result.metrics().query()
    except Exception:  # some runners do not report metrics
        return out
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        out[counter.key.metric.name] = out.get(counter.key.metric.name, 0) + int(value or 0)
    return out


def run_and_report(pipeline, job: str) -> dict[str, int]:
    """Runs the pipeline to completion and prints its counters (progress and drops)."""
    start = time.time()
    print(f"[{job}] running on {type(pipeline.runner).__name__} ...", file=sys.stderr, flush=True)
    result = pipeline.run()
    result.wait_until_finish()
    if getattr(result, "client", None) is not None:  # DaskRunner: its connection to the Dask scheduler
        result.client.close()
    found = counters(result)
    print(f"[{job}] done in {time.time() - start:.1f}s; counters:", file=sys.stderr)
    for name in sorted(found):
        print(f"  {name:<36} {found[name]}", file=sys.stderr)
    if not found:
        print("  (none reported: a runner without metrics, e.g. the DaskRunner, or nothing counted)", file=sys.stderr)
    return found
