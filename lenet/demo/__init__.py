"""`lenet demo`: LeCun's 1993 demo in a browser. Draw a digit, watch every layer.

server.py (the standard library's ThreadingHTTPServer) serves the page of static/ and a
small JSON API over compute.py, which runs the project's own model on every stroke (the
drawing prepared as `lenet predict` prepares a file) and on the test set's mistakes; the
page only draws the answers. Tested by tests/test_demo.py (HTTP and, through Playwright,
in Chromium); latency: bench/demo_latency.py, bench/results/2026-12-06-demo-latency/.
"""
