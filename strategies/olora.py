"""O-LoRA (Wang et al. 2023): a new LoRA adapter per task, kept orthogonal to the earlier, frozen ones.

Every trained task gets its own peft LoRA adapter (the first task uses the adapter ``prepare_model``
creates, later ones ``task<index>``). All adapters are active at once — the model is the base plus the
sum of every task's update — but only the newest trains; the earlier ones have ``requires_grad`` off,
are left out of the optimizer, and stay bitwise unchanged. The loss adds

    λ1 · Σ_layers Σ_old Σ |A_old · A_newᵀ|   +   λ2 · Σ_new tensors ‖W‖₂

(:func:`clbench.train.penalties.olora_orthogonality`, :func:`clbench.train.penalties.olora_l2`), the regularisers of
the O-LoRA reference implementation (its defaults: λ1 = 0.5, λ2 = 0). A checkpoint holds every
adapter; resuming re-creates the earlier adapters before loading them.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import torch

from clbench.config.options import opt
from clbench.errors import ConfigError
from clbench.modeling.lora import LoraOptions
from clbench.strategies.sft import SFT
from clbench.train.penalties import olora_l2, olora_orthogonality
from clbench.train.registry import register
from clbench.train.strategy import LossOutput
from clbench.train.types import RunPlan

_LORA = re.compile(r"^(?P<layer>.+)\.lora_(?P<ab>[AB])\.(?P<adapter>[^.]+)\.weight$")
FIRST_ADAPTER = "default"  # the name peft gives the adapter get_peft_model creates


@dataclass(frozen=True)
class OLoRAOptions(LoraOptions):
    lambda_orth: float = opt(0.5, "λ1 of the orthogonality penalty Σ |A_old · A_newᵀ|", ge=0)
    lambda_l2: float = opt(0.0, "λ2 of the L2 penalty Σ ‖W‖₂ on the new adapter", ge=0)


def lora_weights(model, which: str = "A") -> dict[str, dict[str, torch.nn.Parameter]]:
    """``{adapter: {layer: lora_<which> weight}}`` for every adapter of a peft model."""
    out: dict[str, dict[str, torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        m = _LORA.match(name)
        if m and m["ab"] == which:
            out.setdefault(m["adapter"], {})[m["layer"]] = p
    return out


@register("olora")
class OLoRA(SFT):  # SFT's LoRA-or-full set-up; this adds the method
    """O-LoRA: one LoRA adapter per task, orthogonal to the earlier adapters, which stay frozen."""

    backends = ("torch",)  # one peft adapter per task (peft is torch-only)

    Options = OLoRAOptions

    @classmethod
    def options_from(cls, data, where):
        options = super().options_from(data, where)
        if options.mode != "lora":
            raise ConfigError(f"{where}.mode", f"O-LoRA trains one LoRA adapter per task; got {options.mode!r}",
                              ["lora"])
        return options

    @classmethod
    def check_plan(cls, options, plan: RunPlan, where: str) -> None:
        if not plan.reset_optimizer:
            raise ConfigError(f"{where}.train.reset_optimizer", "olora trains a new adapter per task and needs a "
                              "new optimizer for it; set train.reset_optimizer: true (for the experiment or this row)")

    def __init__(self, options=None, **kw):
        super().__init__(options, **kw)
        self.finished: list[str] = []  # adapters of finished tasks, oldest first (frozen)
        self.current = FIRST_ADAPTER  # the adapter the current (or next) task trains
        self._new_a: dict[str, torch.Tensor] = {}
        self._old_a: list[dict[str, torch.Tensor]] = []
        self._last = {"olora_orth": 0.0, "olora_l2": 0.0}

    def _add_adapter(self, model, name: str) -> None:
        model.add_adapter(name, copy.deepcopy(model.peft_config[FIRST_ADAPTER]))

    def _activate(self, model) -> None:
        """Every adapter active, only ``self.current`` trainable; the optimizer gets only it."""
        model.base_model.set_adapter(self.finished + [self.current])
        if self.finished:
            model.base_model.set_requires_grad(self.finished, requires_grad=False)
        self.trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        wrong = [n for n in self.trainable if f".{self.current}." not in n]
        if wrong or not self.trainable:
            raise RuntimeError(f"olora: trainable parameters outside adapter {self.current!r}: {wrong[:3]}")
        a = lora_weights(model, "A")
        self._new_a = a[self.current]
        self._old_a = [{k: v.detach() for k, v in a[name].items()} for name in self.finished]

    def before_task(self, task, model):
        if self.current in self.finished:
            self.current = f"task{task.index}"
            self._add_adapter(model, self.current)
        self._activate(model)

    def loss(self, model, batch):
        loss = self.backend.lm_loss(model, batch)
        orth = olora_orthogonality(self._new_a, self._old_a)
        l2 = olora_l2(self.trainable.values()) if self.options.lambda_l2 else torch.zeros((), device=orth.device)
        self._last = {"olora_orth": float(orth.detach()), "olora_l2": float(l2.detach())}
        return LossOutput(loss + self.options.lambda_orth * orth + self.options.lambda_l2 * l2, dict(self._last))

    def after_task(self, task, model):
        self.finished.append(self.current)

    def checkpoint_tensors(self, model):
        """Every adapter, finished and current: a resumed run needs all of them."""
        return {n: p.detach() for n, p in model.named_parameters() if _LORA.match(n)}

    def load_checkpoint_tensors(self, model, tensors):
        adapters = sorted({_LORA.match(n)["adapter"] for n in tensors if _LORA.match(n)})
        for name in adapters:
            if name not in model.peft_config:
                self._add_adapter(model, name)
        params = {n: p for n, p in model.named_parameters() if _LORA.match(n)}
        mismatch = sorted(set(params) ^ set(tensors))
        if mismatch:
            raise RuntimeError(f"olora checkpoint does not match the model's adapters: {mismatch[:5]}")
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(tensors[n].to(p.device, p.dtype))

    def state_dict(self):
        return {"finished": list(self.finished), "current": self.current}

    def load_state_dict(self, state):
        self.finished, self.current = list(state["finished"]), state["current"]

    def diagnostics(self):
        return {"adapters": self.finished + ([self.current] if self.current not in self.finished else []),
                **self._last}
