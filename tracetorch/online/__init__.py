"""Online learning without backpropagation through time (presynaptic traces, OTTT).

* :mod:`tracetorch.online.trace`: :class:`TraceLinear` / :class:`TraceConv` keep a
  decaying trace of their inputs (a hidden state) and form weight gradients from it;
  :func:`enable_trace_learning` wraps every Linear/Conv feeding a spiking layer.
* :mod:`tracetorch.online.learner`: :class:`OnlineLearner`, the per-step loop
  (forward, backward, detach, update every k steps).
* :mod:`tracetorch.online.stream`: an endless Poisson clicks stream (trials back to back).
* :mod:`tracetorch.online.reflect`: :class:`ReflectLearner`, REFLECT policy gradient (eligibility
  traces times a reward signal); :mod:`tracetorch.online.policy`: its action heads.

Example:
    >>> import torch, tracetorch as tt
    >>> from tracetorch import online
    >>> net = tt.Sequential(torch.nn.Linear(2, 8), tt.snn.LIB(8), torch.nn.Linear(8, 2), tt.snn.LI(2))
    >>> online.enable_trace_learning(net)
    ['0', '2']
"""

from tracetorch.online.learner import OnlineLearner, OnlineStep
from tracetorch.online.policy import CategoricalHead, GaussianHead, PolicyHead, make_head
from tracetorch.online.reflect import ReflectLearner, RLError
from tracetorch.online.stream import ClicksStream, clicks_stream
from tracetorch.online.trace import (
    PASS_THROUGH,
    TraceConv,
    TraceLinear,
    TraceSynapse,
    decay_of,
    disable_trace_learning,
    enable_trace_learning,
    reset_traces,
    trace_wrap,
)

__all__ = [
    "OnlineLearner", "OnlineStep", "CategoricalHead", "GaussianHead", "PolicyHead", "make_head", "ReflectLearner", "RLError",
    "ClicksStream", "clicks_stream", "PASS_THROUGH", "TraceConv", "TraceLinear",
    "TraceSynapse", "decay_of", "disable_trace_learning", "enable_trace_learning", "reset_traces", "trace_wrap",
]
