"""Every innermost PTX loop of the fused training kernels: instructions, f32 FMAs, shared
and global loads and stores (the figures the README's napkin maths start from).

    NUMBA_ENABLE_CUDASIM=0 python bench/results/2026-12-02-train-census/loops.py > loops.txt
"""

from bench import ptx

ptx.prepare_offline()
from lenet.kernels import sdlm, train_step  # noqa: E402  (after the offline compile set-up)

for k in (sdlm.sdlm_kernel, train_step.batch_kernel, train_step.dense_grads_kernel):
    text = ptx.compile_ptx(k, k.signatures[0], device=False)
    instrs, labels = ptx.instructions(text)
    spans = ptx.innermost(ptx.loops(instrs, labels))
    print(f"== {k.name}: {len(instrs)} PTX instructions, {len(spans)} innermost loops")
    for a, b in spans:
        body = instrs[a:b + 1]
        m = ptx.mix(body)
        ops = [op for op, _ in body]
        count = {kind: sum(op.startswith(kind) for op in ops)
                 for kind in ("ld.shared", "st.shared", "ld.global", "st.global")}
        print(f"   loop {a}-{b}: {m['instructions']} instr, {m['fma_f32']} fma, "
              + ", ".join(f"{v} {kind}" for kind, v in count.items() if v))
