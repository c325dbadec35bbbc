import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run the opt-in slow tests (B4-B7 builds)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow") or os.environ.get("RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="opt-in: pass --runslow or set RUN_SLOW=1")
    for item in items:
        if "optin" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory):
    """A directory this test run's pytest-xdist workers share (the worker's own base directory
    without xdist): for outputs built once per run (tests.helpers.build_once)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory):
    from noisy_student_tf.data import digits

    return digits.prepare(str(tmp_path_factory.mktemp("cache")))


@pytest.fixture()
def fv():
    """A fresh FlagValues with main.py's definitions (absl.flags.FLAGS is left untouched)."""
    from absl import flags as absl_flags

    from flags.main_flags import define_main_flags

    values = absl_flags.FlagValues()
    define_main_flags(values)
    return values
