"""The Triton backend (CUDA): the same fused forward / reverse-time backward as ``neuron_kernels.h``.

One program handles ``BLOCK`` consecutive elements of a step and loops over time with the
states in registers; the flags and the quantizer are ``tl.constexpr`` so Triton compiles one
branch-free kernel per layer kind on first use. Layout and saved values are those described
in :mod:`tracetorch.kernels.fused`. :mod:`tracetorch.kernels.dispatch` uses this backend only
for CUDA inputs when Triton imports; the tests run it against the reference on a GPU (they
skip without one), and it also runs under ``TRITON_INTERPRET=1`` on CPU tensors.
"""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

from tracetorch.kernels.fused import STATE_ROWS, Meta

__all__ = ["TritonBackend"]

BLOCK = 256
# Parameter and state slots: tracetorch.snn.grammar.PARAM_SLOTS / STATE_SLOTS. _load_params, _load_states
# and _store_states name the value of each slot by the slot's code in lower case (slot "NTH" -> nth) and
# read row k of the [13, N] / [7, M] block for the k-th slot; tests/test_kernel_layout.py checks the rows.


@triton.jit
def _sig4(z):
    return 1.0 / (1.0 + tl.exp(-4.0 * z))


@triton.jit
def _posv(v):
    return tl.where(v >= 0.0, v, 0.0)


@triton.jit
def _negv(v):
    return tl.where(v <= 0.0, v, 0.0)


@triton.jit
def _ipos(v):
    return tl.where(v >= 0.0, 1.0, 0.0)


@triton.jit
def _ineg(v):
    return tl.where(v <= 0.0, 1.0, 0.0)


@triton.jit
def _quant(sg, u, step, Q: tl.constexpr):
    if Q == 0:
        res = sg
    elif Q == 1:  # round half to even, like torch.round
        sc = sg / step
        r = tl.floor(sc + 0.5)
        odd = (r - 2.0 * tl.floor(r * 0.5)) == 1.0
        r = tl.where(((r - sc) == 0.5) & odd, r - 1.0, r)
        res = sg + (r * step - sg)
    elif Q == 2:
        sc = sg / step
        lo = tl.floor(sc)
        res = sg + ((lo + tl.where(u < sc - lo, 1.0, 0.0)) * step - sg)
    else:
        p = tl.minimum(tl.maximum(sg, 0.0), 1.0)
        res = sg * tl.where(u < p, 1.0, 0.0)
    return res


@triton.jit
def _dquant(sg, Q: tl.constexpr):
    if Q == 3:
        res = 2.0 * sg
    else:
        res = sg * 0.0 + 1.0
    return res


@triton.jit
def _fire(h, th, nth, bias, up, un, step, FAM: tl.constexpr, Q: tl.constexpr):
    """(sgp, sp, sgn, sn) of one step from the membrane before the reset."""
    zero = h * 0.0
    sgp = zero
    sp = zero
    sgn = zero
    sn = zero
    if FAM >= 2:
        sgp = _sig4(h - th + bias)
        sp = _quant(sgp, up, step, Q)
    if FAM >= 3:
        sgn = _sig4(-nth - h - bias)
        sn = -_quant(sgn, un, step, Q)
    return sgp, sp, sgn, sn


@triton.jit
def _reset_amount(sp, sn, th, nth, FAM: tl.constexpr):
    if FAM == 2:
        res = sp * th
    elif FAM >= 3:
        res = sp * th + sn * nth
    else:
        res = sp * 0.0
    return res


@triton.jit
def _output(h, sp, sn, psc, nsc, FAM: tl.constexpr):
    if FAM == 2:
        res = sp
    elif FAM == 3:
        res = sp + sn
    elif FAM == 4:
        res = psc * sp + nsc * sn
    else:
        res = h
    return res


@triton.jit
def _load_params(prm_ptr, n, N, mask):
    """The 13 parameter slots (``[13, N]``, activated values) for the elements' neurons ``n``."""
    a = tl.load(prm_ptr + 0 * N + n, mask=mask, other=0.0)
    na = tl.load(prm_ptr + 1 * N + n, mask=mask, other=0.0)
    b = tl.load(prm_ptr + 2 * N + n, mask=mask, other=0.0)
    nb = tl.load(prm_ptr + 3 * N + n, mask=mask, other=0.0)
    g = tl.load(prm_ptr + 4 * N + n, mask=mask, other=0.0)
    ng = tl.load(prm_ptr + 5 * N + n, mask=mask, other=0.0)
    w = tl.load(prm_ptr + 6 * N + n, mask=mask, other=0.0)
    nw = tl.load(prm_ptr + 7 * N + n, mask=mask, other=0.0)
    th = tl.load(prm_ptr + 8 * N + n, mask=mask, other=0.0)
    nth = tl.load(prm_ptr + 9 * N + n, mask=mask, other=0.0)
    bias = tl.load(prm_ptr + 10 * N + n, mask=mask, other=0.0)
    psc = tl.load(prm_ptr + 11 * N + n, mask=mask, other=0.0)
    nsc = tl.load(prm_ptr + 12 * N + n, mask=mask, other=0.0)
    return a, na, b, nb, g, ng, w, nw, th, nth, bias, psc, nsc


@triton.jit
def _load_states(ptr, e, M, mask):
    """The seven state slots (syn, nsyn, rec, nrec, prev, mem, nmem) of elements ``e`` of a ``[7, M]`` block."""
    syn = tl.load(ptr + 0 * M + e, mask=mask, other=0.0)
    nsyn = tl.load(ptr + 1 * M + e, mask=mask, other=0.0)
    rec = tl.load(ptr + 2 * M + e, mask=mask, other=0.0)
    nrec = tl.load(ptr + 3 * M + e, mask=mask, other=0.0)
    prev = tl.load(ptr + 4 * M + e, mask=mask, other=0.0)
    mem = tl.load(ptr + 5 * M + e, mask=mask, other=0.0)
    nmem = tl.load(ptr + 6 * M + e, mask=mask, other=0.0)
    return syn, nsyn, rec, nrec, prev, mem, nmem


@triton.jit
def _store_states(ptr, e, M, mask, syn, nsyn, rec, nrec, prev, mem, nmem):
    """Writes the seven state slots of elements ``e`` to a ``[7, M]`` block."""
    tl.store(ptr + 0 * M + e, syn, mask=mask)
    tl.store(ptr + 1 * M + e, nsyn, mask=mask)
    tl.store(ptr + 2 * M + e, rec, mask=mask)
    tl.store(ptr + 3 * M + e, nrec, mask=mask)
    tl.store(ptr + 4 * M + e, prev, mask=mask)
    tl.store(ptr + 5 * M + e, mem, mask=mask)
    tl.store(ptr + 6 * M + e, nmem, mask=mask)


@triton.jit
def _forward_kernel(x_ptr, prm_ptr, init_ptr, u_ptr, out_ptr, fin_ptr, sav_ptr, T, M, N, INNER, step,
                    DUAL: tl.constexpr, SYN: tl.constexpr, REC: tl.constexpr, FAM: tl.constexpr, Q: tl.constexpr,
                    DRAWS: tl.constexpr, SAVE: tl.constexpr, S: tl.constexpr, KR: tl.constexpr, KM: tl.constexpr,
                    BLOCK: tl.constexpr):
    e = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = e < M
    n = (e // INNER) % N
    a, na, b, nb, g, ng, w, nw, th, nth, bias, psc, nsc = _load_params(prm_ptr, n, N, mask)
    syn, nsyn, rec, nrec, prev, mem, nmem = _load_states(init_ptr, e, M, mask)
    for t in range(T):
        t64 = tl.cast(t, tl.int64)
        base = t64 * M
        xv = tl.load(x_ptr + base + e, mask=mask, other=0.0)
        if SYN:
            if DUAL:
                syn = a * syn + (1.0 - a) * _posv(xv)
                nsyn = na * nsyn + (1.0 - na) * _negv(xv)
                u = syn + nsyn
            else:
                syn = a * syn + (1.0 - a) * xv
                u = syn
        else:
            u = xv
        dn = u * 0.0
        if REC:
            if DUAL:
                rec = g * rec + (1.0 - g) * _posv(prev)
                nrec = ng * nrec + (1.0 - ng) * _negv(prev)
                r = rec + nrec
                dp = w * _posv(r) + _posv(u)
                dn = nw * _negv(r) + _negv(u)
            else:
                rec = g * rec + (1.0 - g) * prev
                dp = w * rec + u
        else:
            if DUAL:
                dp = _posv(u)
                dn = _negv(u)
            else:
                dp = u
        if FAM == 1:
            mem = b * mem + (1.0 - b) * dp
        else:
            mem = b * mem + dp
        if DUAL:
            if FAM == 1:
                nmem = nb * nmem + (1.0 - nb) * dn
            else:
                nmem = nb * nmem + dn
            h = mem + nmem
        else:
            h = mem
        if SAVE:
            sbase = t64 * S * M
            if SYN:
                tl.store(sav_ptr + sbase + 0 * M + e, syn, mask=mask)
                if DUAL:
                    tl.store(sav_ptr + sbase + 1 * M + e, nsyn, mask=mask)
            if REC:
                tl.store(sav_ptr + sbase + KR * M + e, rec, mask=mask)
                if DUAL:
                    tl.store(sav_ptr + sbase + (KR + 1) * M + e, nrec, mask=mask)
            tl.store(sav_ptr + sbase + KM * M + e, mem, mask=mask)
            if DUAL:
                tl.store(sav_ptr + sbase + (KM + 1) * M + e, nmem, mask=mask)
        up = xv * 0.0
        un = xv * 0.0
        if DRAWS >= 1:
            up = tl.load(u_ptr + t64 * DRAWS * M + e, mask=mask, other=0.0)
        if DRAWS >= 2:
            un = tl.load(u_ptr + t64 * DRAWS * M + M + e, mask=mask, other=0.0)
        sgp, sp, sgn, sn = _fire(h, th, nth, bias, up, un, step, FAM, Q)
        if FAM >= 2:
            amount = _reset_amount(sp, sn, th, nth, FAM)
            if DUAL:
                mem = mem - 0.5 * amount
                nmem = nmem - 0.5 * amount
            else:
                mem = mem - amount
        o = _output(h, sp, sn, psc, nsc, FAM)
        if REC:
            prev = o
        tl.store(out_ptr + base + e, o, mask=mask)
    _store_states(fin_ptr, e, M, mask, syn, nsyn, rec, nrec, prev, mem, nmem)


@triton.jit
def _backward_kernel(gout_ptr, gfin_ptr, x_ptr, prm_ptr, init_ptr, u_ptr, sav_ptr, gx_ptr, gprm_ptr, ginit_ptr,
                     T, M, N, INNER, step, GTS,
                     DUAL: tl.constexpr, SYN: tl.constexpr, REC: tl.constexpr, FAM: tl.constexpr, Q: tl.constexpr,
                     DRAWS: tl.constexpr, HAS_X: tl.constexpr, S: tl.constexpr, KR: tl.constexpr, KM: tl.constexpr,
                     BLOCK: tl.constexpr):
    e = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = e < M
    n = (e // INNER) % N
    a, na, b, nb, g, ng, w, nw, th, nth, bias, psc, nsc = _load_params(prm_ptr, n, N, mask)
    ga_syn, ga_nsyn, ga_rec, ga_nrec, ga_prev, ga_mem, ga_nmem = _load_states(gfin_ptr, e, M, mask)
    zero = ga_mem * 0.0
    gp_a = zero
    gp_na = zero
    gp_b = zero
    gp_nb = zero
    gp_g = zero
    gp_ng = zero
    gp_w = zero
    gp_nw = zero
    gp_th = zero
    gp_nth = zero
    gp_bias = zero
    gp_psc = zero
    gp_nsc = zero
    for i in range(T):
        t = tl.cast(T - 1 - i, tl.int64)
        sbase = t * S * M
        has_prev = t > 0
        pmask = mask & has_prev
        pbase = (t - 1) * S * M
        # ---- the states before step t ----
        if SYN:
            syn0 = tl.where(has_prev, tl.load(sav_ptr + pbase + 0 * M + e, mask=pmask, other=0.0),
                            tl.load(init_ptr + 0 * M + e, mask=mask, other=0.0))
            nsyn0 = zero
            if DUAL:
                nsyn0 = tl.where(has_prev, tl.load(sav_ptr + pbase + 1 * M + e, mask=pmask, other=0.0),
                                 tl.load(init_ptr + 1 * M + e, mask=mask, other=0.0))
        if REC:
            rec0 = tl.where(has_prev, tl.load(sav_ptr + pbase + KR * M + e, mask=pmask, other=0.0),
                            tl.load(init_ptr + 2 * M + e, mask=mask, other=0.0))
            nrec0 = zero
            if DUAL:
                nrec0 = tl.where(has_prev, tl.load(sav_ptr + pbase + (KR + 1) * M + e, mask=pmask, other=0.0),
                                 tl.load(init_ptr + 3 * M + e, mask=mask, other=0.0))
        hm0 = tl.load(sav_ptr + pbase + KM * M + e, mask=pmask, other=0.0)
        hn0 = zero
        if DUAL:
            hn0 = tl.load(sav_ptr + pbase + (KM + 1) * M + e, mask=pmask, other=0.0)
        h0 = hm0 + hn0
        upp = zero
        unp = zero
        if DRAWS >= 1:
            upp = tl.load(u_ptr + (t - 1) * DRAWS * M + e, mask=pmask, other=0.0)
        if DRAWS >= 2:
            unp = tl.load(u_ptr + (t - 1) * DRAWS * M + M + e, mask=pmask, other=0.0)
        psgp, psp, psgn, psn = _fire(h0, th, nth, bias, upp, unp, step, FAM, Q)
        amount0 = _reset_amount(psp, psn, th, nth, FAM)
        if DUAL:
            mem0 = tl.where(has_prev, hm0 - 0.5 * amount0, tl.load(init_ptr + 5 * M + e, mask=mask, other=0.0))
            nmem0 = tl.where(has_prev, hn0 - 0.5 * amount0, tl.load(init_ptr + 6 * M + e, mask=mask, other=0.0))
        else:
            mem0 = tl.where(has_prev, hm0 - amount0, tl.load(init_ptr + 5 * M + e, mask=mask, other=0.0))
            nmem0 = zero
        if REC:
            prev = tl.where(has_prev, _output(h0, psp, psn, psc, nsc, FAM),
                            tl.load(init_ptr + 4 * M + e, mask=mask, other=0.0))
        # ---- this step's values ----
        xv = zero
        if HAS_X:
            xv = tl.load(x_ptr + t * M + e, mask=mask, other=0.0)
        syn = zero
        nsyn = zero
        rec = zero
        nrec = zero
        if SYN:
            syn = tl.load(sav_ptr + sbase + 0 * M + e, mask=mask, other=0.0)
            if DUAL:
                nsyn = tl.load(sav_ptr + sbase + 1 * M + e, mask=mask, other=0.0)
            u = syn + nsyn
        else:
            u = xv
        if REC:
            rec = tl.load(sav_ptr + sbase + KR * M + e, mask=mask, other=0.0)
            if DUAL:
                nrec = tl.load(sav_ptr + sbase + (KR + 1) * M + e, mask=mask, other=0.0)
        r = rec + nrec
        dn = zero
        if REC:
            if DUAL:
                dp = w * _posv(r) + _posv(u)
                dn = nw * _negv(r) + _negv(u)
            else:
                dp = w * rec + u
        else:
            if DUAL:
                dp = _posv(u)
                dn = _negv(u)
            else:
                dp = u
        hm = tl.load(sav_ptr + sbase + KM * M + e, mask=mask, other=0.0)
        hn = zero
        if DUAL:
            hn = tl.load(sav_ptr + sbase + (KM + 1) * M + e, mask=mask, other=0.0)
        h = hm + hn
        up = zero
        un = zero
        if DRAWS >= 1:
            up = tl.load(u_ptr + t * DRAWS * M + e, mask=mask, other=0.0)
        if DRAWS >= 2:
            un = tl.load(u_ptr + t * DRAWS * M + M + e, mask=mask, other=0.0)
        # ---- fire ----
        G = tl.load(gout_ptr + t * GTS + e, mask=mask, other=0.0)
        if REC:
            G = G + ga_prev
        gh_n = zero
        if FAM < 2:
            gh_p = ga_mem + G
            if DUAL:
                gh_n = ga_nmem + G
        else:
            sgp, sp, sgn, sn = _fire(h, th, nth, bias, up, un, step, FAM, Q)
            if DUAL:
                g_amount = -0.5 * (ga_mem + ga_nmem)
            else:
                g_amount = -ga_mem
            if FAM == 2:
                g_s = G + g_amount * th
                g_z = g_s * _dquant(sgp, Q) * 4.0 * sgp * (1.0 - sgp)
                gp_th += g_amount * sp - g_z
                gp_bias += g_z
                ghf = g_z
            else:
                if FAM == 4:
                    g_sp = G * psc + g_amount * th
                    g_sn = G * nsc + g_amount * nth
                    gp_psc += G * sp
                    gp_nsc += G * sn
                else:
                    g_sp = G + g_amount * th
                    g_sn = G + g_amount * nth
                g_zp = g_sp * _dquant(sgp, Q) * 4.0 * sgp * (1.0 - sgp)
                g_zn = -g_sn * _dquant(sgn, Q) * 4.0 * sgn * (1.0 - sgn)
                gp_th += g_amount * sp - g_zp
                gp_nth += g_amount * sn - g_zn
                gp_bias += g_zp - g_zn
                ghf = g_zp - g_zn
            gh_p = ga_mem + ghf
            if DUAL:
                gh_n = ga_nmem + ghf
        # ---- membrane ----
        if FAM == 1:
            gp_b += gh_p * (mem0 - dp)
            g_dp = gh_p * (1.0 - b)
        else:
            gp_b += gh_p * mem0
            g_dp = gh_p
        ga_mem = gh_p * b
        g_dn = zero
        if DUAL:
            if FAM == 1:
                gp_nb += gh_n * (nmem0 - dn)
                g_dn = gh_n * (1.0 - nb)
            else:
                gp_nb += gh_n * nmem0
                g_dn = gh_n
            ga_nmem = gh_n * nb
        # ---- recurrence ----
        if REC:
            if DUAL:
                gp_w += g_dp * _posv(r)
                gp_nw += g_dn * _negv(r)
                g_r = g_dp * w * _ipos(r) + g_dn * nw * _ineg(r)
                g_pr = ga_rec + g_r
                g_nr = ga_nrec + g_r
                gp_g += g_pr * (rec0 - _posv(prev))
                gp_ng += g_nr * (nrec0 - _negv(prev))
                ga_rec = g_pr * g
                ga_nrec = g_nr * ng
                ga_prev = g_pr * (1.0 - g) * _ipos(prev) + g_nr * (1.0 - ng) * _ineg(prev)
                g_u = g_dp * _ipos(u) + g_dn * _ineg(u)
            else:
                gp_w += g_dp * rec
                g_rec = ga_rec + g_dp * w
                gp_g += g_rec * (rec0 - prev)
                ga_rec = g_rec * g
                ga_prev = g_rec * (1.0 - g)
                g_u = g_dp
        else:
            if DUAL:
                g_u = g_dp * _ipos(u) + g_dn * _ineg(u)
            else:
                g_u = g_dp
        # ---- drive ----
        if SYN:
            if DUAL:
                g_ps = ga_syn + g_u
                g_ns = ga_nsyn + g_u
                gp_a += g_ps * (syn0 - _posv(xv))
                gp_na += g_ns * (nsyn0 - _negv(xv))
                ga_syn = g_ps * a
                ga_nsyn = g_ns * na
                gxv = g_ps * (1.0 - a) * _ipos(xv) + g_ns * (1.0 - na) * _ineg(xv)
            else:
                g_syn = ga_syn + g_u
                gp_a += g_syn * (syn0 - xv)
                ga_syn = g_syn * a
                gxv = g_syn * (1.0 - a)
        else:
            gxv = g_u
        tl.store(gx_ptr + t * M + e, gxv, mask=mask)
    _store_states(ginit_ptr, e, M, mask, ga_syn, ga_nsyn, ga_rec, ga_nrec, ga_prev, ga_mem, ga_nmem)
    tl.store(gprm_ptr + 0 * M + e, gp_a, mask=mask)
    tl.store(gprm_ptr + 1 * M + e, gp_na, mask=mask)
    tl.store(gprm_ptr + 2 * M + e, gp_b, mask=mask)
    tl.store(gprm_ptr + 3 * M + e, gp_nb, mask=mask)
    tl.store(gprm_ptr + 4 * M + e, gp_g, mask=mask)
    tl.store(gprm_ptr + 5 * M + e, gp_ng, mask=mask)
    tl.store(gprm_ptr + 6 * M + e, gp_w, mask=mask)
    tl.store(gprm_ptr + 7 * M + e, gp_nw, mask=mask)
    tl.store(gprm_ptr + 8 * M + e, gp_th, mask=mask)
    tl.store(gprm_ptr + 9 * M + e, gp_nth, mask=mask)
    tl.store(gprm_ptr + 10 * M + e, gp_bias, mask=mask)
    tl.store(gprm_ptr + 11 * M + e, gp_psc, mask=mask)
    tl.store(gprm_ptr + 12 * M + e, gp_nsc, mask=mask)


def _layout(meta: Meta) -> dict[str, int]:
    f = meta.flags
    width = 2 if f.dual else 1
    kr = width if f.synaptic else 0
    km = kr + (width if f.recurrent else 0)
    return {"S": km + width, "KR": kr, "KM": km}


def _states_or_zeros(states: Tensor | None, like: Tensor) -> Tensor:
    """``states`` ``[7, M]``, or zeros of that shape for ``None`` (the Triton kernels always read all slots)."""
    return like.new_zeros(STATE_ROWS, like.shape[-1]) if states is None else states


class TritonBackend:
    """:class:`tracetorch.kernels.fused.Backend` running the Triton kernels above."""

    def forward(self, x: Tensor, params: Tensor, init: Tensor | None, uniforms: Tensor | None, meta: Meta,
                save: bool) -> tuple[Tensor, Tensor, Tensor, None]:
        if meta.pool:
            raise ValueError("the Triton kernels do not pool (Meta.pool is a CPU backend feature)")
        d, s, r, fam, q = meta.codes
        steps, m = x.shape
        init = _states_or_zeros(init, x)
        lay = _layout(meta)
        out = x.new_empty(steps, m)
        final = init.new_empty(init.shape)
        saved = x.new_empty(steps if save else 0, lay["S"], m)
        draws = 0 if uniforms is None else uniforms.shape[1]
        u = uniforms if uniforms is not None else x
        grid = (triton.cdiv(m, BLOCK),)
        _forward_kernel[grid](x, params.contiguous(), init.contiguous(), u, out, final, saved if save else out,
                              steps, m, meta.num_neurons, meta.inner, meta.step,
                              DUAL=d, SYN=s, REC=r, FAM=fam, Q=q, DRAWS=draws, SAVE=save, BLOCK=BLOCK, **lay)
        return out, final, saved, None

    def backward(self, grad_out: Tensor, grad_final: Tensor | None, x: Tensor | None, params: Tensor,
                 init: Tensor | None, uniforms: Tensor | None, saved: Tensor, meta: Meta,
                 init_grad: bool, param_grad: bool, pool_arg: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Computes the parameter gradients whatever ``param_grad`` says (the caller drops them); ``pool_arg`` is
        always ``None`` here (no pooling)."""
        d, s, r, fam, q = meta.codes
        steps, m = saved.shape[0], grad_out.shape[1]
        init, grad_final = _states_or_zeros(init, grad_out), _states_or_zeros(grad_final, grad_out)
        gx = grad_out.new_empty(steps, m)
        gprm = grad_out.new_empty(params.shape[0], m)
        ginit = init.new_empty(init.shape)
        draws = 0 if uniforms is None else uniforms.shape[1]
        grid = (triton.cdiv(m, BLOCK),)
        _backward_kernel[grid](grad_out, grad_final, grad_out if x is None else x, params.contiguous(), init.contiguous(),
                               grad_out if uniforms is None else uniforms, saved, gx, gprm, ginit,
                               steps, m, meta.num_neurons, meta.inner, meta.step, m if grad_out.shape[0] == steps else 0,
                               DUAL=d, SYN=s, REC=r, FAM=fam, Q=q, DRAWS=draws, HAS_X=x is not None,
                               BLOCK=BLOCK, **_layout(meta))
        return gx, gprm, ginit
