"""`lenet export`: a checkpoint, or the shipped weights, as an ONNX file (lenet.export);
an existing file is replaced only with --force, never the checkpoint itself."""

import os

from lenet.commands.common import UserError, add_checkpoint_option, load_model


def add(sub):
    p = sub.add_parser("export", help="write the network as ONNX",
                       description="Write a trained LeNet-5 as an ONNX graph (lenet/export.py): "
                       "input images (N,1,32,32) as lenet.data.preprocess makes them, outputs "
                       "the ten RBF penalties (N,10) and the class (N,) of the smallest; C3 "
                       "as a masked convolution, the trainable subsampling, the scaled tanh "
                       "and the RBF layer as they are. Needs the onnx package "
                       "(pip install 'lenet5-cuda[onnx]').")
    p.add_argument("--format", default="onnx", metavar="FORMAT",
                   help="the file format: onnx (the only one, and the default)")
    add_checkpoint_option(p, "a .npz written by `lenet train` (default: the weights shipped "
                          "with the package, where this version has them)")
    p.add_argument("--out", metavar="FILE", help="the file to write (default: the "
                   "checkpoint's name with .onnx, or lenet5.onnx); an existing file is "
                   "replaced only with --force")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    return p


def run(args):
    from lenet import export
    from lenet.model import is_shipped
    if args.format not in export.FORMATS:
        raise UserError(f"unknown format {args.format!r} (known: {', '.join(export.FORMATS)})")
    try:
        export.require_onnx()
    except ImportError as e:
        raise UserError(str(e)) from e
    if args.out == "":
        raise UserError("--out must name a file, not an empty string")
    out = args.out or (os.path.splitext(args.checkpoint)[0] + ".onnx" if args.checkpoint
                       else "lenet5.onnx")
    if os.path.isdir(out):
        raise UserError(f"--out {out} is a directory; give a file name")
    out_dir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_dir):
        raise UserError(f"cannot write {out}: directory {out_dir} does not exist")
    if os.path.lexists(out) and not args.force:
        raise UserError(f"{out} exists; refusing to overwrite it (give --force to replace "
                        "it, or another --out)")
    model = load_model(args, "cpu")   # sets args.checkpoint (the shipped weights' path)
    if os.path.exists(out) and os.path.samefile(out, args.checkpoint):
        raise UserError(f"--out {out} is the checkpoint itself; give another name")
    if is_shipped(out):
        raise UserError(f"--out {out} is the trained weights shipped with the package; "
                        "give another name")
    try:   # what the machine refuses is the OSError of lenet.cli (exit 1), named here
        export.to_onnx(model, out, overwrite=args.force)
    except OSError as e:
        if not e.filename and out not in str(e):
            e.filename = out
        raise
    print(f"{out}: ONNX (opset {export.OPSET}), {export.INPUT} (N,1,32,32) -> "
          f"{export.PENALTIES} (N,10), {export.CLASS} (N,)")
    return 0
