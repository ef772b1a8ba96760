"""The GRPO step benchmark (W1, W2) on TRL's GRPOTrainer, for comparison with
`lmmhost bench grpo`. Builds the same model config (random init, fp32), the
same character tokenizer and the same prompts (exported by
`lmmhost bench grpo --export-prompts`), runs N+warmup optimizer steps and
prints the median step time, its split, tokens/s and peak RSS.

Run through bench/run.sh, or:
  .venv-trl/bin/python bench/trl/grpo_trl.py --workload w1 --prompts P.jsonl
"""

import argparse
import json
import os
import re
import resource
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--workload", choices=["w1", "w2"], required=True)
    p.add_argument("--prompts", required=True, help="JSONL from lmmhost bench grpo --export-prompts")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="also write the figures here")
    p.add_argument("--out", default=str(REPO / "runs" / "bench-trl"))
    return p.parse_args()


ARGS = parse_args()
# Threads must be fixed before torch starts its pools.
os.environ.setdefault("OMP_NUM_THREADS", str(ARGS.threads))
os.environ.setdefault("MKL_NUM_THREADS", str(ARGS.threads))

import torch  # noqa: E402
import transformers  # noqa: E402
import trl  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import PreTrainedTokenizerFast, TrainerCallback  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

torch.set_num_threads(ARGS.threads)


def char_tokenizer(path):
    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(path),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
    )
    tok.padding_side = "left"
    return tok


def w1_model():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = json.loads((REPO / "configs/models/char-qwen2/config.json").read_text())
    config = Qwen2Config(
        vocab_size=cfg["vocab_size"],
        hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"],
        num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=cfg["num_attention_heads"],
        num_key_value_heads=cfg["num_key_value_heads"],
        rms_norm_eps=cfg["rms_norm_eps"],
        rope_theta=cfg["rope_theta"],
        tie_word_embeddings=True,
        max_position_embeddings=cfg["max_position_embeddings"],
        bos_token_id=cfg["bos_token_id"],
        eos_token_id=cfg["eos_token_id"],
        pad_token_id=cfg["pad_token_id"],
    )
    tok = char_tokenizer(REPO / "configs/models/char-qwen2/tokenizer.json")
    return Qwen2ForCausalLM(config).float(), tok


def w2_model():
    from transformers import (
        AutoConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
    )

    d = REPO / "configs/bench/w2-model"
    config = AutoConfig.from_pretrained(str(d))
    model = Qwen2_5_VLForConditionalGeneration(config).float()
    tok = char_tokenizer(d / "tokenizer.json")
    pre = json.loads((d / "preprocessor_config.json").read_text())
    image_processor = Qwen2VLImageProcessor(
        **{k: v for k, v in pre.items() if k not in ("image_processor_type", "processor_class")}
    )
    # No video processor (it would need torchvision); transformers' class check
    # insists on one, so it is skipped for this images-only processor.
    from transformers import processing_utils

    processing_utils.ProcessorMixin.check_argument_for_proper_class = lambda self, n, a: None
    proc = Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tok, video_processor=None)
    # TRL needs conversational prompts for multimodal models and applies the
    # template itself: Qwen2-VL's template, as lmmhost renders it.
    tmpl = json.loads((REPO / "configs/models/tiny-qwen2.5-vl/chat_template.json").read_text())["chat_template"]
    proc.chat_template = tmpl
    tok.chat_template = tmpl
    return model, proc


VISION = "<|vision_start|><|image_pad|><|vision_end|>"


def user_messages(rendered):
    """The user turn of an exported chat-templated prompt, as structured content
    (text and image placeholders in their order)."""
    user = rendered.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]
    parts = []
    for i, text in enumerate(user.split(VISION)):
        if i > 0:
            parts.append({"type": "image"})
        if text:
            parts.append({"type": "text", "text": text})
    return [{"role": "user", "content": parts}]


ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)


def reward(completions, **_):
    """A cheap rule reward (format + answer present), as reward-math's r1 format."""
    out = []
    for c in completions:
        text = c if isinstance(c, str) else c[-1]["content"]
        fmt = 0.5 if re.fullmatch(r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*", text, re.S) else 0.0
        out.append(fmt + (1.0 if ANSWER.search(text) else 0.0))
    return out


class Timer:
    """Wall time per labelled phase, per optimizer step."""

    def __init__(self):
        self.cur = defaultdict(float)
        self.steps = []

    def wrap(self, obj, name, label):
        fn = getattr(obj, name, None)
        if fn is None:
            print(f"note: {type(obj).__name__}.{name} not found; {label} not split out", file=sys.stderr)
            return
        timer = self

        def wrapped(*a, **k):
            lab = label(*a, **k) if callable(label) else label
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                timer.cur[lab] += time.perf_counter() - t

        setattr(obj, name, wrapped)


class StepTimes(TrainerCallback):
    def __init__(self, timer):
        self.timer = timer
        self.t0 = None

    def on_step_begin(self, args, state, control, **kw):
        self.timer.cur.clear()
        self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        rec = dict(self.timer.cur)
        rec["step"] = time.perf_counter() - self.t0
        self.timer.steps.append(rec)


def main():
    rows = [json.loads(l) for l in Path(ARGS.prompts).read_text().splitlines() if l.strip()]
    n_prompts = 16 * (ARGS.steps + ARGS.warmup)
    if len(rows) < n_prompts:
        sys.exit(f"{ARGS.prompts}: {len(rows)} prompts, need {n_prompts}")
    rows = rows[:n_prompts]
    torch.manual_seed(0)
    if ARGS.workload == "w1":
        model, proc = w1_model()
        data = Dataset.from_list([{"prompt": r["prompt"]} for r in rows])
        tok = proc
    else:
        from PIL import Image

        model, proc = w2_model()
        data = Dataset.from_list(
            [{"prompt": user_messages(r["prompt"]), "image": Image.open(r["images"][0]).convert("RGB")} for r in rows]
        )
        tok = proc.tokenizer
    model.generation_config.eos_token_id = tok.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.pad_token_id = tok.pad_token_id
    # TRL builds its frozen reference from the policy's path: save the random
    # initialisation so both start from the same weights (as lmmhost's do).
    model_dir = Path(ARGS.out) / f"model-{ARGS.workload}"
    model.save_pretrained(str(model_dir))

    cfg = GRPOConfig(
        output_dir=ARGS.out,
        use_cpu=True,
        bf16=False,
        fp16=False,
        per_device_train_batch_size=32,
        gradient_accumulation_steps=4,
        num_generations=8,
        num_iterations=1,
        max_completion_length=64,
        temperature=1.0,
        generation_kwargs={"min_new_tokens": 64},
        beta=0.04,
        epsilon=0.2,
        learning_rate=1e-5,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=1.0,
        loss_type="dapo",
        scale_rewards="group",
        gradient_checkpointing=False,
        max_steps=ARGS.steps + ARGS.warmup,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        dataloader_num_workers=0,
        seed=0,
        shuffle_dataset=False,
        model_init_kwargs={"dtype": torch.float32},
    )
    trainer = GRPOTrainer(
        model=str(model_dir),
        reward_funcs=[reward],
        args=cfg,
        train_dataset=data,
        processing_class=proc,
    )
    timer = Timer()
    trainer.add_callback(StepTimes(timer))
    gen_name = next(
        (n for n in ("_generate", "_generate_single_turn") if hasattr(trainer, n)), "_generate"
    )
    timer.wrap(trainer, gen_name, "rollout")
    timer.wrap(trainer, "_calculate_rewards", "reward")
    timer.wrap(
        trainer,
        "_get_per_token_logps_and_entropies",
        lambda *a, **k: "forward" if torch.is_grad_enabled() else "ref/old logprobs",
    )
    timer.wrap(trainer.accelerator, "backward", "backward")
    trainer.create_optimizer_and_scheduler(num_training_steps=cfg.max_steps)
    timer.wrap(trainer.optimizer, "step", "optimizer")
    trainer.train()

    steps = timer.steps[ARGS.warmup :]
    if not steps:
        sys.exit("no measured step")
    keys = ["rollout", "reward", "ref/old logprobs", "forward", "backward", "optimizer", "step"]
    med = {k: statistics.median(s.get(k, 0.0) for s in steps) for k in keys}
    # The exported text has one <|image_pad|> per image; a 56x56 image is 4 tokens.
    lp = statistics.mean(len(tok(r["prompt"])["input_ids"]) + 3 * len(r["images"]) for r in rows)
    tokens = 128 * (lp + 64)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(
        f"\nTRL GRPO step, workload {ARGS.workload} ({len(steps)} measured steps after {ARGS.warmup} warm-up, "
        f"{ARGS.threads} threads; trl {trl.__version__}, transformers {transformers.__version__}, torch {torch.__version__})"
    )
    for k in keys:
        print(f"  {k:<18} {med[k]:>8.3f} s  {100 * med[k] / med['step']:>5.1f} %")
    print(f"  tokens/s (prompt+response per step time) {tokens / med['step']:.0f}")
    print(f"  generated tokens/s (rollout)             {128 * 64 / max(med['rollout'], 1e-9):.0f}")
    print(f"  peak RSS                                 {rss_mb:.0f} MiB")
    if ARGS.json:
        out = {f"time/{k}" if k != "ref/old logprobs" else "time/logprobs": v for k, v in med.items()}
        out.update(
            {
                "peak_rss_mb": rss_mb,
                "throughput/tokens_per_s": tokens / med["step"],
                "versions": {"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__},
            }
        )
        Path(ARGS.json).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
