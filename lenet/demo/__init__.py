"""`lenet demo`: LeCun's 1993 demo in a browser. Draw a digit, watch every layer.

A local web server (lenet/demo/server.py, the standard library's ThreadingHTTPServer)
serves one page (lenet/demo/static/) and runs the project's own model for it
(lenet/demo/compute.py): on every stroke the page sends the drawing's grey pixels,
the server prepares them exactly as `lenet predict` prepares an image file and answers
with the activations of every layer, input 32x32 to F6, the ten RBF penalties and the
class; the page only draws them. A second view steps through the test set's mistakes
(as `lenet show errors` finds them) and the paper's random distortions of an image.

    lenet demo [--checkpoint FILE] [--port 8000] [--device auto]   (lenet/commands/demo.py)

Tested by tests/test_demo.py (HTTP and, through Playwright, in Chromium); its latency
is measured by bench/demo_latency.py (bench/results/2026-12-06-demo-latency/).
"""
