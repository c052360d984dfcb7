"""Safe checkpoint reading: wrappers, prefixes, and one clear error per kind of bad file."""

import os

import pytest
import torch

from vitdeploy.errors import UserError
from vitdeploy.models.checkpoints import diff_state_dict, load_into, load_state_dict_file


def test_unwraps_model_ema_and_module_prefix(tmp_path):
    sd = {"module.a.weight": torch.ones(2), "module.b": torch.zeros(1)}
    p = tmp_path / "c.pth"
    torch.save({"model_ema": sd, "epoch": 3, "optimizer": {"lr": torch.tensor(0.1)}}, p)
    got = load_state_dict_file(p)
    assert set(got) == {"a.weight", "b"}


def test_safetensors_roundtrip(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "c.safetensors"
    save_file({"w": torch.arange(4.0)}, str(p))
    assert torch.equal(load_state_dict_file(p)["w"], torch.arange(4.0))


@pytest.mark.parametrize("name,content,needle", [
    ("trunc.pth", None, "unreadable or truncated"),
    ("rand.safetensors", os.urandom(256), "not a valid safetensors"),
    ("rand.pth", os.urandom(256), "checkpoint"),
])
def test_bad_files_give_one_line_user_error(tmp_path, name, content, needle):
    p = tmp_path / name
    if content is None:  # a real checkpoint cut in half
        full = tmp_path / "full.pth"
        torch.save({"w": torch.randn(1000)}, full)
        data = full.read_bytes()
        content = data[: len(data) // 2]
    p.write_bytes(content)
    with pytest.raises(UserError) as e:
        load_state_dict_file(p)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_state_dict_file(tmp_path / "nope.pth")


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    p = tmp_path / "evil.pth"
    torch.save({"model": Evil()}, p)
    with pytest.raises(UserError, match="refusing to unpickle|cannot read"):
        load_state_dict_file(p)


def test_strict_load_names_missing_unexpected_and_mismatched():
    m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    sd = {"0.weight": torch.zeros(3, 5), "0.bias": torch.zeros(3), "9.weight": torch.zeros(1)}
    d = diff_state_dict(m, sd)
    assert d["missing"] == ["1.weight", "1.bias"] and d["unexpected"] == ["9.weight"]
    with pytest.raises(UserError) as e:
        load_into(m, sd, "toy", guess="other")
    msg = str(e.value)
    assert "0.weight (3, 5) vs (3, 4)" in msg and "1.weight" in msg and "9.weight" in msg and "other" in msg
