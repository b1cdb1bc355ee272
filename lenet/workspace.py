"""Memory for training, allocated once (llm.c's habit): FlatBuffer, a parameter-shaped
flat array with named views (the model's parameters, a Trainer's gradients, velocities,
curvature and step sizes), and Workspace, the GPU's buffers for the fused training step
of kernels/train_step.py at one batch size (and any smaller count: a pass's last batch).
Backends make them (ops.parameter_buffer(), GPUOps.workspace(batch)).
"""

import numpy as np

from lenet.kernels.architecture import PARAMETER_AT, PARAMETER_SHAPES, PARAMETERS_LEN


class FlatBuffer:
    """One flat array of PARAMETERS_LEN in PARAMETER_AT order (kernels/architecture.py)
    and .views[name], views of it shaped as PARAMETER_SHAPES: the kernels read the flat
    array, the user the views, and writing a view writes the buffer."""

    def __init__(self, flat):
        if tuple(flat.shape) != (PARAMETERS_LEN,):
            raise ValueError(f"FlatBuffer: shape {tuple(flat.shape)}, expected "
                             f"({PARAMETERS_LEN},)")
        self.flat = flat
        self.views = {name: flat[PARAMETER_AT[name]:PARAMETER_AT[name] + int(np.prod(shape))]
                      .reshape(shape) for name, shape in PARAMETER_SHAPES.items()}

    def __getitem__(self, name):
        return self.views[name]


class Workspace:
    """Everything kernels/train_step.py needs for steps of up to `batch` images, checked
    and sized once, so that step() launches its three kernels with no checks and no
    allocation.

    rows[name]   (batch, length) device views of the activation rows: a1..a6 (each
                 layer's output), y, dy, hy, loss (per image: loss, misclassified), d1..d6
                 (each layer's delta, or curvature after an order-2 step)
    blocks       most blocks of batch_kernel (default: one wave, as many as the GPU's SMs
                 hold at once by kernels/occupancy.py; 2 in the simulator)
    splits       most batch splits of dense_grads_kernel (default: one wave of its 9-tile
                 columns)
    split_images fewest images a split takes
    """

    def __init__(self, batch, centers, table, out_table, blocks=None, splits=None,
                 split_images=None):
        from numba import config, cuda

        from lenet.kernels import train_step as ts
        from lenet.kernels.backward_pieces import check_constants
        from lenet.kernels.occupancy import device_resident_blocks
        self.ts = ts
        if not isinstance(batch, (int, np.integer)) or batch < 1:
            raise ValueError(f"Workspace: batch must be a positive whole number, not {batch!r}")
        check_constants("Workspace", centers, table, out_table)
        if batch > ts.MAX_BATCH:
            raise ValueError(f"Workspace: batch {batch} is past the fused step's largest, "
                             f"{ts.MAX_BATCH} (its activation rows use 32-bit indices)")
        sms = 1 if config.ENABLE_CUDASIM else cuda.get_current_device().MULTIPROCESSOR_COUNT
        one_wave = ts.persistent_grid(
            sms, device_resident_blocks(ts.batch_kernel, ts.THREADS),
            device_resident_blocks(ts.dense_grads_kernel, ts.THREADS))
        self.batch, self.bp = int(batch), ts.padded(int(batch))
        self.blocks = int(blocks or one_wave[0])
        self.splits = int(splits or one_wave[1])
        self.split_images = int(split_images or ts.SPLIT_IMAGES)
        self.centers, self.table, self.out_table = centers, table, out_table
        # rows past the batch (a partial group) are read into sums that are never used, so
        # on a GPU they are left as allocated (tests/test_train_step.py poisons them with
        # NaN); the simulator gets zeros (free there), sparing NumPy's inf * 0 warnings
        self.acts = cuda.to_device(np.zeros(self.bp * ts.ROW_LEN, np.float32)) \
            if config.ENABLE_CUDASIM else cuda.device_array(self.bp * ts.ROW_LEN, np.float32)
        self.rows = {name: self.acts[self.bp * at:self.bp * (at + ts.ACT_LEN[name])]
                     .reshape(self.bp, ts.ACT_LEN[name])[:self.batch]
                     for name, at in ts.ACT_AT.items()}
        self.conv_part = cuda.device_array((self.blocks, ts.CONV_LEN), np.float32)
        self.dense_part = cuda.device_array((self.splits, ts.DENSE_LEN), np.float32)
        self.stats_part = cuda.device_array((self.blocks, 2), np.float32)
        self.scratch_stats = cuda.device_array(2, np.float64)   # for steps that count none

    def step(self, params, grads, velocity, rates, stats, images, labels, index, start, count,
             kind, j, order, mode, lr, momentum):
        """One step over images[index[start:start + count]] (module docstring of
        kernels/train_step.py): params, grads, velocity, rates flat (PARAMETERS_LEN,);
        images (N, 1024); kind, order, mode the kernels' int32 codes; stats (2,) float64
        gains the step's loss and error sums. Only count is checked: the caller's arrays
        were checked when it made them."""
        if not 0 < count <= self.batch:
            raise ValueError(f"Workspace: {count} images in a workspace for {self.batch}")
        self.ts.launch(self.acts, self.bp, params, grads, velocity, rates, images, labels, index,
                       start, count, kind, j, order, mode, lr, momentum, self.conv_part,
                       self.dense_part, self.stats_part, stats, self.centers, self.table,
                       self.out_table, self.split_images)

    def losses(self, count):
        """The per-pattern losses of the last step's `count` images, on the host."""
        return self.rows["loss"][:count].copy_to_host()[:, 0]
