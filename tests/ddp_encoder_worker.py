"""One process of a two-process gloo run of `encoder.train.train_encoder` (tests/test_encoder_ddp.py
starts it with torchrun). argv: dataset, out dir, "fresh" | "resume", crash step (0: none).
Each rank writes <out>/rank<r>.json: world size, backend, whether it was the main process, and the
weights sha256 of the artifact it returned."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_encoder_resume import _cfg  # noqa: E402  (the same small config as the resume test)
from test_encoder_train import HashTextEmbedder  # noqa: E402

from dynaflip_ros.encoder import checkpoint as ckpt  # noqa: E402
from dynaflip_ros.encoder.train import train_encoder  # noqa: E402


def main() -> None:
    dataset, out, mode, crash = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    torch.set_num_threads(1)
    if crash:
        real = ckpt.save_checkpoint

        def save_then_crash(out_dir, step, *a, **kw):
            path = real(out_dir, step, *a, **kw)
            if step == crash:
                raise SystemExit(f"crash after the checkpoint of step {step}")
            return path
        ckpt.save_checkpoint = save_then_crash
    result = train_encoder(dataset, out, _cfg(), text_embedder=HashTextEmbedder(), progress=False, verbose=False,
                           resume=mode == "resume")
    (out / f"rank{torch.distributed.get_rank()}.json").write_text(json.dumps({
        "world_size": torch.distributed.get_world_size(), "backend": torch.distributed.get_backend(),
        "is_main": result.is_main, "weights_sha256": result.manifest.weights_sha256}))


if __name__ == "__main__":
    main()
