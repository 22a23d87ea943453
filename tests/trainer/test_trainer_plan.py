"""Pure decisions of the trainer: method and precision, LoRA/quantization/SFT arguments, schedules, config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ftjob import contract
from ftjob.api import FineTuneJobSpec
from ftjob.api.peft import PeftSpec
from ftjob_trainer.config import TrainerConfig
from ftjob_trainer.errors import ConfigInvalid
from ftjob_trainer.modeling import Hardware, lora_config_kwargs, plan_training, quantization_kwargs
from ftjob_trainer.training import plan_schedule, sft_config_kwargs, total_steps, warmup_steps

CPU = Hardware(cuda=False, bf16=False, device_name="cpu")
H100 = Hardware(cuda=True, bf16=True, device_name="NVIDIA H100")
T4 = Hardware(cuda=True, bf16=False, device_name="Tesla T4")

BASE: dict[str, Any] = {
    "baseModel": {"uri": "s3://models/base/"},
    "data": {"trainUri": "s3://data/train.jsonl"},
    "output": {"uri": "s3://out/run/"},
}


def spec(**sections: Any) -> FineTuneJobSpec:
    return FineTuneJobSpec.model_validate({**BASE, **sections})


@pytest.mark.parametrize(
    ("peft", "hardware", "method", "dtype", "noted"),
    [
        pytest.param({}, H100, "qlora", "bfloat16", False, id="qlora-on-h100-bf16"),
        pytest.param({}, T4, "qlora", "float16", False, id="qlora-on-t4-fp16"),
        pytest.param({}, CPU, "lora", "float32", True, id="qlora-on-cpu-falls-back"),
        pytest.param({"method": "lora"}, CPU, "lora", "float32", False, id="lora-on-cpu"),
        pytest.param(
            {"quantization": {"computeDtype": "bfloat16"}},
            T4,
            "qlora",
            "float16",
            True,
            id="bf16-unsupported",
        ),
        pytest.param(
            {"quantization": {"computeDtype": "float32"}}, H100, "qlora", "float32", False, id="explicit-fp32"
        ),
    ],
)
def test_plan_training(
    peft: dict[str, Any], hardware: Hardware, method: str, dtype: str, noted: bool
) -> None:
    plan = plan_training(PeftSpec.model_validate(peft), hardware)
    assert (plan.method, plan.dtype, bool(plan.notes)) == (method, dtype, noted)
    assert plan.bf16 == (dtype == "bfloat16") and plan.fp16 == (dtype == "float16")


def test_lora_and_quantization_arguments() -> None:
    peft = PeftSpec.model_validate(
        {"r": 8, "alpha": 16, "dropout": 0.1, "targetModules": ["q_proj", "v_proj"]}
    )
    assert lora_config_kwargs(peft) == {
        "r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.1,
        "target_modules": ["q_proj", "v_proj"],
        "bias": "none",
        "task_type": "CAUSAL_LM",
    }
    assert lora_config_kwargs(PeftSpec())["target_modules"] == "all-linear"
    quant = quantization_kwargs(PeftSpec(), "bfloat16")
    assert (
        quant["load_in_4bit"] and quant["bnb_4bit_quant_type"] == "nf4" and quant["bnb_4bit_use_double_quant"]
    )


@pytest.mark.parametrize(
    ("training", "checkpointing", "expected"),
    [
        pytest.param({}, {"everySteps": 50}, (None, 50, False), id="epoch-evals"),
        pytest.param({"evalEverySteps": 20}, {"everySteps": 50}, (20, 50, False), id="step-evals"),
        pytest.param(
            {"earlyStopping": {"enabled": True}, "evalEverySteps": 20},
            {"everySteps": 50},
            (20, 60, True),
            id="early-stopping-aligns-saves",
        ),
        pytest.param(
            {"earlyStopping": {"enabled": True}},
            {"everySteps": 30},
            (30, 30, True),
            id="early-stopping-default-grid",
        ),
    ],
)
def test_schedule(
    training: dict[str, Any], checkpointing: dict[str, Any], expected: tuple[int | None, int, bool]
) -> None:
    schedule = plan_schedule(spec(training=training, checkpointing=checkpointing))
    assert (schedule.eval_steps, schedule.save_steps, schedule.load_best_at_end) == expected


@pytest.mark.parametrize(
    ("training", "sequences", "steps"),
    [
        pytest.param(
            {"epochs": 1, "perDeviceBatchSize": 4, "gradientAccumulationSteps": 4}, 100, 7, id="one-epoch"
        ),
        pytest.param(
            {"epochs": 2.5, "perDeviceBatchSize": 8, "gradientAccumulationSteps": 1},
            80,
            25,
            id="fractional-epochs",
        ),
        pytest.param({"maxSteps": 3}, 10_000, 3, id="max-steps-wins"),
        pytest.param({"epochs": 1, "perDeviceBatchSize": 64}, 3, 1, id="at-least-one"),
    ],
)
def test_total_steps(training: dict[str, Any], sequences: int, steps: int) -> None:
    assert total_steps(spec(training=training), sequences) == steps


def test_warmup_ratio_becomes_steps() -> None:
    assert warmup_steps(spec(training={"warmupRatio": 0.1}), 95) == 10
    assert warmup_steps(spec(training={"warmupRatio": 0.0}), 95) == 0


def test_sft_arguments_follow_the_spec_and_the_hardware() -> None:
    job = spec(
        training={"learningRate": 1e-4, "scheduler": "linear", "packing": True, "lossOn": "all", "seed": 7}
    )
    kwargs = sft_config_kwargs(
        job, plan_training(job.peft, CPU), output_dir=__import__("pathlib").Path("/w/c"), use_cpu=True
    )
    assert kwargs["learning_rate"] == 1e-4 and kwargs["lr_scheduler_type"] == "linear"
    assert kwargs["packing"] is True and kwargs["seed"] == kwargs["data_seed"] == 7
    assert (kwargs["bf16"], kwargs["fp16"], kwargs["use_cpu"]) == (
        False,
        False,
        True,
    )  # never trl's bf16 default on CPU
    assert kwargs["assistant_only_loss"] is False  # masks come pre-computed in `assistant_masks`
    assert kwargs["max_length"] == 2048 and kwargs["report_to"] == "none"


def env_with(spec_doc: Any) -> dict[str, str]:
    return {
        contract.ENV_SPEC: spec_doc if isinstance(spec_doc, str) else json.dumps(spec_doc),
        contract.ENV_WORKDIR: "/w",
    }


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({}, "FTJOB_SPEC is not set", id="missing"),
        pytest.param(env_with("{not json"), "FTJOB_SPEC is not valid JSON", id="not-json"),
        pytest.param(env_with({**BASE, "peft": {"r": 0}}), "spec.peft.r: must be >= 1 (got 0)", id="invalid"),
    ],
)
def test_config_errors_are_config_invalid(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigInvalid, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainerConfig.from_env(env)


def test_a_newer_operator_s_spec_is_read_leniently(caplog: pytest.LogCaptureFixture) -> None:
    # An older trainer image (pinned through spec.image) under an operator whose CRD added defaulted fields.
    env = env_with({**BASE, "futureField": {"x": 1}, "training": {"epochs": 2, "futureKnob": True}})
    env[contract.ENV_CONTRACT_VERSION] = str(contract.CONTRACT_VERSION + 1)
    with caplog.at_level("INFO", logger="ftjob.trainer"):
        config = TrainerConfig.from_env(env)
    assert config.spec.training.epochs == 2
    logged = caplog.text
    assert "spec.futureField" in logged and "spec.training.futureKnob" in logged
    assert f"contract version {contract.CONTRACT_VERSION + 1}" in logged
    # Known fields are still checked strictly, unknown ones or not.
    with pytest.raises(ConfigInvalid, match=r"spec.peft.r: must be >= 1"):
        TrainerConfig.from_env(env_with({**BASE, "futureField": 1, "peft": {"r": 0}}))
    with pytest.raises(ConfigInvalid, match="FTJOB_CONTRACT_VERSION is not an integer"):
        TrainerConfig.from_env({**env_with(BASE), contract.ENV_CONTRACT_VERSION: "two"})


def test_fingerprint_follows_training_fields_only() -> None:
    first = TrainerConfig.from_env(env_with(BASE))
    same = TrainerConfig.from_env(
        env_with({**BASE, "suspend": True, "backoffLimit": 5, "evaluation": {"maxSamples": 3}})
    )
    other = TrainerConfig.from_env(env_with({**BASE, "training": {"learningRate": 1e-5}}))
    assert first.training_fingerprint == same.training_fingerprint != other.training_fingerprint
    assert first.path("a", "b") == first.workdir / "a" / "b"


def test_help_and_config_check_do_not_import_torch() -> None:
    # The pod's entry point must answer --help and --check-config instantly.
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from ftjob_trainer import cli\n"
        "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'trl', 'peft', 'boto3') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "ftjob-train" in result.stdout
    assert result.stdout.splitlines()[-1] == ""  # the list of heavy modules imported: none


def test_tokenized_dataset_follows_the_file_content(tmp_path: Path, smollm2_tokenizer_path: Path) -> None:
    # The dataset is cached on disk by datasets; a file rewritten in place must not be served stale.
    from transformers import AutoTokenizer

    from ftjob_cli.demo.orders import generate_examples
    from ftjob_trainer.training import build_dataset

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_tokenizer_path))
    data = tmp_path / "train.clean.jsonl"
    examples = generate_examples(6)
    data.write_text("\n".join(json.dumps(e) for e in examples[:4]) + "\n")
    first = build_dataset(data, tokenizer, max_length=256, loss_on="assistant", cache_dir=tmp_path / "cache")
    data.write_text("\n".join(json.dumps(e) for e in examples) + "\n")
    second = build_dataset(data, tokenizer, max_length=256, loss_on="assistant", cache_dir=tmp_path / "cache")
    assert (len(first), len(second)) == (4, 6)
    row = second[0]
    assert len(row["input_ids"]) == len(row["assistant_masks"]) and 0 < sum(row["assistant_masks"]) < len(
        row["input_ids"]
    )


def test_transformers_turns_the_warmup_ratio_into_the_same_steps() -> None:
    from transformers import TrainingArguments

    s = spec(training={"warmupRatio": 0.1})
    kwargs = sft_config_kwargs(s, plan_training(s.peft, CPU), Path("/tmp/unused"), use_cpu=True)
    assert kwargs["warmup_steps"] == 0.1
    args = TrainingArguments(output_dir="/tmp/unused", warmup_steps=kwargs["warmup_steps"], use_cpu=True)
    assert args.get_warmup_steps(95) == warmup_steps(s, 95) == 10
