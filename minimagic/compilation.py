"""torch.compile for minimagic's training step and sampler (an engineering addition, docs/paper.md §10).

torch.compile traces a module's Python into graphs (TorchDynamo) and generates fused kernels for them
(inductor: C++ with OpenMP on a CPU, Triton on a GPU). The first call with a new input shape compiles
(minutes on a laptop CPU); later calls run the generated code. Two uses, both off by default:

- training (`TrainConfig.compile`, `train STAGE --compile true`): `compiled_loss` compiles the stage's loss
  module, so the model's forward, the loss and, through AOTAutograd, their backward. The model itself stays
  a plain module: previews, the EMA copy and checkpoints never see the compiled wrapper.
- sampling (`pipe.compile()`) and encoding: `compile_in_place` compiles a module's forward (the denoiser,
  the VAE's encoder) in place; its weights, state_dict and checkpoints are unchanged; `uncompile` undoes it.
  Graphs compiled inside `frozen_weights()` hold the weights as constants (inference only, see there).

`bench/stages.py` measures both against eager mode, stage by stage, with the compile time apart from the
steady-state time (`docs/efficiency.md`). Shapes are static (`dynamic=False`): a new batch size or number
of frames compiles once more, up to torch._dynamo's cache limit, after which that shape runs eagerly.
"""

import torch
from torch import nn

BACKEND = "inductor"  # torch.compile's default; "aot_eager" traces the same graphs without generating code


def compiled_loss(loss: nn.Module) -> nn.Module:
    """`loss` (distributed.StageLoss, maybe inside DistributedDataParallel) compiled: called as before."""
    return torch.compile(loss, backend=BACKEND, dynamic=False)


def compile_in_place(module: nn.Module) -> nn.Module:
    """Compile `module`'s forward in place (nn.Module.compile): the same object, the same weights and state_dict."""
    module.compile(backend=BACKEND, dynamic=False)
    return module


def is_compiled(module: nn.Module) -> bool:
    """True for a torch.compile wrapper or a module compiled in place."""
    return isinstance(module, torch._dynamo.eval_frame.OptimizedModule) or \
        getattr(module, "_compiled_call_impl", None) is not None


def frozen_weights():
    """Context in which inference graphs compile with the weights inlined as constants (inductor's `freezing`:
    constant folding, and on a CPU weights prepacked for oneDNN), for the sampler's denoiser 1.1x-1.2x faster
    than a plain compile (docs/results.md, streaming). Such a graph keeps the weights it was compiled with: use it on a
    loaded model that will not be trained or reloaded. Compiling happens at the first call of each shape, so
    make those calls (under torch.no_grad) inside the context."""
    from torch._inductor import config  # inductor's settings, imported only when asked for

    return config.patch(freezing=True)


def uncompile(module: nn.Module) -> nn.Module:
    """Undo `compile_in_place`: `module`'s forward runs eagerly again."""
    module._compiled_call_impl = None
    return module
