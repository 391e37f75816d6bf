import subprocess
import sys


def test_algos_import_without_ray_vllm_deepspeed_hydra_or_distributed_init():
    code = (
        "import sys, rlpipe.algos\n"
        "heavy = [m for m in ('ray', 'vllm', 'deepspeed', 'hydra', 'transformers') if m in sys.modules]\n"
        "import torch.distributed as d\n"
        "assert not heavy, heavy\n"
        "assert not d.is_initialized()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
