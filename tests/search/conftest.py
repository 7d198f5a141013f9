import pytest

import slimkit as sk
from slimkit.core.data import DataSplits, TensorData
from slimkit.search import sensitivity


@pytest.fixture(scope="session")
def digits():
    """The bundled digits CNN and its data splits."""
    return sk.load("example:digits-cnn"), sk.load_data("example:digits")


@pytest.fixture(scope="session")
def small(digits):
    """The digits CNN with splits cut to 16 calibration and 32 test samples (fast tests)."""
    model, data = digits
    cal, test = data.calibration, data.test
    return model, DataSplits(
        train=cal.take(16), calibration=TensorData(cal.x[:16], cal.y[:16], 16), test=test.take(32), metric="accuracy"
    )


@pytest.fixture(scope="session")
def fc_table(small):
    """Weight-only 2/4/8-bit rows of the classifier, scored by fidelity on 16 samples."""
    model, data = small
    return sensitivity(model, data, ("quantize",), metric="fidelity", bits=(2, 4, 8), max_batches=1)
