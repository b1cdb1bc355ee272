"""How many blocks of a kernel one SM holds at once, from its registers, shared memory and
threads (the CUDA occupancy calculator's rules, resident_blocks; or the driver's answer
for a compiled kernel, device_resident_blocks), so that launchers that size a grid by the
GPU (one wave of persistent blocks) derive it from the kernel instead of a constant.

Test: pytest -q tests/test_occupancy.py (the census's figures for an H100 and an H200
against every launch geometry the project chooses).
"""

from dataclasses import dataclass

from numba import config


@dataclass(frozen=True)
class SMLimits:
    """One SM's resources (CUDA C Programming Guide, compute capability table)."""
    registers: int = 65536           # 32-bit registers an SM
    register_unit: int = 256         # registers are allocated per warp in units of this
    max_registers: int = 255         # a thread's
    threads: int = 2048
    blocks: int = 32
    shared: int = 233472             # bytes an SM (228 KB)
    shared_per_block: int = 232448   # the most one block may use (227 KB)
    shared_reserved: int = 1024      # bytes the system reserves for each block
    shared_unit: int = 128           # shared memory is allocated in units of this


HOPPER = SMLimits()
GPUS = {"NVIDIA H100 80GB HBM3": (HOPPER, 132), "NVIDIA H200": (HOPPER, 132)}


def _ceil(a, b):
    return -(-a // b) * b


def resident_blocks(regs, threads, shared, limits=HOPPER):
    """Blocks of `threads` threads, `regs` registers a thread and `shared` bytes of shared
    memory a block that one SM holds at once (0: the block cannot launch)."""
    warps = -(-threads // 32)
    if regs > limits.max_registers or shared > limits.shared_per_block \
            or threads > 1024 or warps == 0:
        return 0
    by_threads = min(limits.blocks, limits.threads // (warps * 32))
    warp_regs = _ceil(max(regs, 1) * 32, limits.register_unit)
    by_registers = (limits.registers // warp_regs) // warps
    block_shared = _ceil(shared + limits.shared_reserved, limits.shared_unit)
    by_shared = limits.shared // block_shared
    return min(by_threads, by_registers, by_shared)


def device_resident_blocks(kernel, threads, simulated=2):
    """Resident blocks an SM of kernels.common.Kernel `kernel` (one signature) at `threads`
    threads a block, asked of the driver (compiling the kernel if need be); `simulated`
    under the CUDA simulator, which has no SMs."""
    if config.ENABLE_CUDASIM:
        return simulated
    from numba import cuda
    compiled = next(iter(kernel.dispatcher.overloads.values()))   # compiled when made
    sms = cuda.get_current_device().MULTIPROCESSOR_COUNT
    return int(compiled.max_cooperative_grid_blocks(threads)) // sms
