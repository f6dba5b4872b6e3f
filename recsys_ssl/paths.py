"""Where inputs and artifacts live: the raw-data root and the per-run artifact layout."""

import os
import pathlib

# Where a pipeline run keeps its artifacts unless --run-dir says otherwise.
DEFAULT_RUN_DIR = "runs/demo"

# The raw data root: --data-dir flag, else $RECSYS_SSL_DATA, else ../shared/data when it exists.
DATA_ENV = "RECSYS_SSL_DATA"
# TFDS's prepared datasets: $RECSYS_SSL_TFDS_DIR, else <run_dir>/tfds.
TFDS_ENV = "RECSYS_SSL_TFDS_DIR"

PROJECT_ROOT = pathlib.Path(__file__).resolve().parent.parent
SPECS_DIR = PROJECT_ROOT / "data" / "specs"
CONFIGS_DIR = PROJECT_ROOT / "data" / "configs"


def raw_data_root(flag: str | None = None) -> pathlib.Path:
    """The folder holding raw datasets (e.g. ``movielens-100k/``); raises if none is found."""
    if flag:
        return pathlib.Path(flag)
    if os.environ.get(DATA_ENV):
        return pathlib.Path(os.environ[DATA_ENV])
    for candidate in (pathlib.Path.cwd().parent / "shared" / "data", PROJECT_ROOT.parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"No raw data folder: pass --data-dir or set {DATA_ENV} to the folder that holds "
        "movielens-100k/ (or movielens-1m/)."
    )


def tfds_dir(run_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """TFDS data_dir: $RECSYS_SSL_TFDS_DIR, else <run_dir>/tfds, else runs/tfds."""
    if os.environ.get(TFDS_ENV):
        return pathlib.Path(os.environ[TFDS_ENV])
    base = pathlib.Path(run_dir) if run_dir else PROJECT_ROOT / "runs"
    return base / "tfds"


class RunLayout:
    """The artifact folders of one pipeline run; every stage writes a manifest.json in its folder.

    <run_dir>/tfds            prepared TFDS datasets
    <run_dir>/stats           feature statistics job (vocabularies, item frequencies)
    <run_dir>/stats_10pct     the same over the 10%-data regime's train pairs (its logQ frequencies)
    <run_dir>/mi              mutual-information job (MI matrix, CFM masking groups)
    <run_dir>/train/<name>    checkpoints, TensorBoard logs, final weights of one experiment
    <run_dir>/eval/<name>     metrics of one experiment
    <run_dir>/export          SavedModels and ScaNN index (TF Serving layout)
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.root = pathlib.Path(run_dir)

    @property
    def tfds(self) -> pathlib.Path:
        return tfds_dir(self.root)

    @property
    def stats(self) -> pathlib.Path:
        return self.root / "stats"

    @property
    def stats_10pct(self) -> pathlib.Path:
        return self.root / "stats_10pct"

    @property
    def mi(self) -> pathlib.Path:
        return self.root / "mi"

    def train(self, name: str) -> pathlib.Path:
        return self.root / "train" / name

    def eval(self, name: str) -> pathlib.Path:
        return self.root / "eval" / name

    @property
    def export(self) -> pathlib.Path:
        return self.root / "export"
