"""recsys_ssl: self-supervised learning for large-scale item retrieval (Yao et al., CIKM 2021)."""

from setuptools import find_packages, setup

# The pinned stack. Change a pin only with a measurement that justifies it (see README).
INSTALL_REQUIRES = [
    "tensorflow==2.20.*",
    "tf-keras==2.20.*",  # TFRS needs Keras 2; recsys_ssl sets TF_USE_LEGACY_KERAS=1.
    "tensorflow-recommenders==0.7.7",  # never the [docs] extra: it pins an old scann.
    "scann[tf]==1.4.2",  # its TF ops load only with TF 2.20.
    "apache-beam==2.77.*",
    "tensorflow-datasets==4.9.10",
    "pyarrow>=14",
    "numpy>=1.26",
    "pyyaml>=6",
    "tqdm>=4.60",
    "matplotlib>=3.7",
    "optuna==5.0.*",  # `recsys-ssl tune`: TPE + median pruning, SQLite studies that resume (docs/tuning.md)
    # `recsys-ssl serve` (docs/serving.md, "The server"): uvicorn's HTTP/1.1 on httptools (llhttp) and uvloop,
    # metrics with the official Prometheus client.
    "uvicorn==0.54.*",
    "httptools==0.9.*",
    "uvloop==0.23.*",
    "prometheus-client==0.26.*",
]

setup(
    name="recsys_ssl",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["recsys_ssl", "recsys_ssl.*", "pipelines", "pipelines.*"]),
    package_data={"recsys_ssl": ["py.typed"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-timeout>=2.2",
            "hypothesis>=6.100",
            "requests>=2.31",
            "dask[distributed]==2026.8.*",  # tests/test_dask_runner.py
            "ruff==0.17.*",  # `make lint` (run by `make test`): linter and formatter, settings in pyproject.toml
        ],
        # --runner DaskRunner (docs/cluster.md): Beam 2.77's runner on Dask distributed
        "dask": ["dask[distributed]==2026.8.*"],
        # bench/peers.py. rectools-lightfm: a maintained build of LightFM 1.17 (the same
        # `lightfm` module) whose sdist builds through pip; lightfm 1.17's does not (lyst/lightfm#687).
        "bench": ["implicit==0.7.3", "rectools-lightfm==1.17.3"],
    },
    entry_points={"console_scripts": ["recsys-ssl=recsys_ssl.cli:main"]},
)
