"""Per-run memory, measured from the tensors: exact on small modules whose sizes are known."""
import torch
from torch import nn

from tunekit import memory


def test_weights_gradients_and_optimizer_state_are_the_tensors_bytes():
    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 2))
    n = sum(p.numel() for p in net.parameters())
    opt = torch.optim.AdamW(net.parameters())
    net(torch.randn(8, 16)).sum().backward()
    assert memory.weight_bytes(net) == 4 * n
    assert memory.gradient_bytes(net) == 4 * n
    opt.step()
    # two fp32 moments per value, plus one step counter per parameter tensor
    assert memory.optimizer_bytes(opt) == 8 * n + 4 * len(list(net.parameters()))


def test_shared_storage_is_counted_once():
    a = nn.Linear(8, 8, bias=False)
    b = nn.Linear(8, 8, bias=False)
    b.weight = a.weight  # tied, like an LM head and its embeddings
    assert memory.weight_bytes(nn.ModuleList([a, b])) == 8 * 8 * 4


def test_activations_are_what_autograd_keeps_for_backward_without_the_weights():
    lin = nn.Linear(16, 32)
    x = torch.randn(8, 16)
    with memory.ActivationMeter(lin) as m:
        y = torch.relu(lin(x))
    # linear keeps its input (8 x 16); relu keeps its output (8 x 32); the weight is not counted
    assert m.bytes == 8 * 16 * 4 + 8 * 32 * 4
    y.sum().backward()  # the hooks leave backward working
    assert lin.weight.grad is not None


def test_activations_grow_with_the_batch():
    net = nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 16))
    sizes = []
    for b in (4, 8):
        with memory.ActivationMeter(net) as m:
            net(torch.randn(b, 16)).sum()
        sizes.append(m.bytes)
    # saved for backward, per row: the first Linear's input (16), GELU's input (64) and the
    # second Linear's input (64), in fp32 - a meter that counts nothing fails here
    assert sizes == [4 * (16 + 64 + 64) * 4, 8 * (16 + 64 + 64) * 4]
