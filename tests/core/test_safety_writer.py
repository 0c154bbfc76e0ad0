"""The all-or-nothing folder writer: manifests, recovery, carried files, and a crash at every
file operation of a save (a child process that kills itself at the k-th operation)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import CONFIGS

from gpt2_core import CheckpointError, folder_writer, load_pretrained, random_params, save_pretrained
from gpt2_core.folder_writer import MANIFEST, FolderWriter, write_folder

CONFIG = CONFIGS["default"]


def test_save_writes_a_manifest_of_sizes_and_optional_sha256(tmp_path):
    records = save_pretrained(tmp_path / "m", CONFIG, random_params(CONFIG), sha256=True)
    manifest = json.loads((tmp_path / "m" / MANIFEST).read_text())["files"]
    assert manifest == records and set(records) == {"config.json", "model.safetensors"}
    assert records["model.safetensors"]["size"] == (tmp_path / "m" / "model.safetensors").stat().st_size
    assert len(records["config.json"]["sha256"]) == 64
    assert folder_writer.manifest_problems(str(tmp_path / "m"), check_sha256=True) == []


def test_mismatched_set_is_refused_naming_the_files(tmp_path):
    save_pretrained(tmp_path, CONFIG, random_params(CONFIG, seed=1), max_shard_size=4000)
    shard = sorted(tmp_path.glob("model-*.safetensors"))[1]
    shard.write_bytes(shard.read_bytes() + b"\0" * 8)
    with pytest.raises(CheckpointError, match=rf"`{shard.name}` has \d+ bytes; `{MANIFEST}`"):
        load_pretrained(tmp_path)


def test_folder_without_manifest_loads_as_today(tmp_path):
    params = random_params(CONFIG, seed=1)
    save_pretrained(tmp_path, CONFIG, params)
    os.remove(tmp_path / MANIFEST)
    np.testing.assert_array_equal(load_pretrained(tmp_path)[1]["wte.weight"], params["wte.weight"])


def test_other_files_in_the_folder_are_carried_over(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "keep.txt").write_text("kept")
    (tmp_path / "vocab.json").write_text("{}")
    save_pretrained(tmp_path, CONFIG, random_params(CONFIG), max_shard_size=4000)
    save_pretrained(tmp_path, CONFIG, random_params(CONFIG))
    names = sorted(os.listdir(tmp_path))
    assert names == ["config.json", MANIFEST, "model.safetensors", "sub", "vocab.json"]
    assert (tmp_path / "sub" / "keep.txt").read_text() == "kept"
    assert not [n for n in os.listdir(tmp_path.parent) if n.startswith(f".{tmp_path.name}.")]


def test_extra_files_join_the_transaction(tmp_path):
    save_pretrained(tmp_path, CONFIG, random_params(CONFIG),
                    extra_files={"generation_config.json": "{}\n", "merges.txt": b"#v\n"})
    manifest = json.loads((tmp_path / MANIFEST).read_text())["files"]
    assert {"generation_config.json", "merges.txt"} <= set(manifest)
    with pytest.raises(ValueError, match=r"`extra_files` may not replace .*'model.safetensors'"):
        save_pretrained(tmp_path, CONFIG, random_params(CONFIG), extra_files={"model.safetensors": b""})
    with pytest.raises(ValueError, match=r"plain file name .* Received: '../x'"):
        save_pretrained(tmp_path, CONFIG, random_params(CONFIG), extra_files={"../x": b""})


def test_failed_write_leaves_the_old_folder_and_no_sibling(tmp_path):
    target = tmp_path / "m"
    save_pretrained(target, CONFIG, random_params(CONFIG, seed=1))
    before = (target / "model.safetensors").read_bytes()
    with pytest.raises(RuntimeError, match="boom"):
        with FolderWriter(target) as w:
            w.write("config.json", "{}")
            raise RuntimeError("boom")
    assert (target / "model.safetensors").read_bytes() == before
    assert os.listdir(tmp_path) == ["m"]


def test_interrupted_swap_is_recovered_by_the_loader_and_finished_by_the_next_save(tmp_path):
    target = tmp_path / "m"
    old, new = random_params(CONFIG, seed=1), random_params(CONFIG, seed=2)
    save_pretrained(target, CONFIG, old)
    save_pretrained(tmp_path / ".m.new-999999-abcd", CONFIG, new)  # the writer's complete sibling
    os.rename(target, tmp_path / ".m.old-999999-abcd")  # the crash came between the renames
    np.testing.assert_array_equal(load_pretrained(target)[1]["wte.weight"], new["wte.weight"])
    write_folder(target, {"note.txt": "x"})
    assert sorted(os.listdir(tmp_path)) == ["m"]
    np.testing.assert_array_equal(load_pretrained(target)[1]["wte.weight"], new["wte.weight"])


def test_saving_onto_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(FileExistsError, match=r"exists and is not a folder"):
        save_pretrained(tmp_path / "f", CONFIG, random_params(CONFIG))


def test_max_shard_size_must_be_positive(tmp_path):
    for bad in (-5, 0, 1.5, True):
        with pytest.raises(ValueError, match=rf"`max_shard_size` must be a positive .* max_shard_size={bad!r}"):
            save_pretrained(tmp_path, CONFIG, random_params(CONFIG), max_shard_size=bad)


def test_save_pretrained_with_a_wrong_shape_tensor_says_save(tmp_path):
    params = dict(random_params(CONFIG))
    params["wte.weight"] = params["wte.weight"][:5]
    with pytest.raises(CheckpointError, match=r"Cannot save these tensors .*\n.*`wte.weight` has shape"):
        save_pretrained(tmp_path, CONFIG, params)


# ---- a crash at every file operation ---------------------------------------------------------

# The child saves checkpoint B over A, counting file operations; at operation K it kills itself
# with os._exit (no cleanup, no flush: what SIGKILL or a power cut leaves, minus the page cache).
CHILD = textwrap.dedent("""
    import os, shutil, sys
    from gpt2_core import GPT2Config, random_params, save_pretrained
    target, kill_at, sharded = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
    config = GPT2Config(vocab_size=97, n_positions=24, n_embd=32, n_layer=2, n_head=4)
    count = [0]
    def counted(fn):
        def wrapper(*a, **k):
            count[0] += 1
            if count[0] == kill_at:
                os._exit(17)
            return fn(*a, **k)
        return wrapper
    for name in ("write", "fsync", "replace", "rename", "link", "mkdir", "unlink", "rmdir", "open"):
        setattr(os, name, counted(getattr(os, name)))
    save_pretrained(target, config, random_params(config, seed=2), max_shard_size=4000 if sharded else None,
                    extra_files={"generation_config.json": "{}"})
    print("ops", count[0])
""")


def _which(path, old, new) -> str:
    _, got = load_pretrained(path)
    for label, ref in (("old", old), ("new", new)):
        if all(np.array_equal(got[k], ref[k]) for k in ref):
            return label
    return "mix"


@pytest.mark.parametrize("sharded", [False, True])
def test_crash_at_every_file_operation_leaves_old_or_new(tmp_path, sharded):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    old, new = random_params(CONFIG, seed=1), random_params(CONFIG, seed=2)
    target = tmp_path / "m"
    full = subprocess.run([sys.executable, "-c", CHILD, str(target), "0", str(int(sharded))],
                          env=env, capture_output=True, text=True, check=True)
    total = int(full.stdout.split()[-1])
    assert total > 10
    seen = set()
    for k in range(1, total + 1):
        save_pretrained(target, CONFIG, old, max_shard_size=4000 if not sharded else None)
        run = subprocess.run([sys.executable, "-c", CHILD, str(target), str(k), str(int(sharded))],
                             env=env, capture_output=True, text=True)
        assert run.returncode == 17, run.stderr
        outcome = _which(target, old, new)
        assert outcome in ("old", "new"), f"kill at operation {k} of {total} left {outcome}"
        seen.add(outcome)
    assert seen == {"old", "new"}
