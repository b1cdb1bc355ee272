set -o pipefail
cd /work/fresh
echo "# $(date -u +%FT%TZ) commit $(git rev-parse HEAD) on $(nproc) cores, other core busy (yes > /dev/null)"
echo '$ python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/python -m lenet train --dataset mnist --data ../shared/data/mnist --epochs 1'
start=$(date +%s.%N)
python3 -m venv .venv && .venv/bin/pip install -q -e . 2>&1 | grep -v "^WARNING: Location" ; installed=$(date +%s.%N)
.venv/bin/python -m lenet train --dataset mnist --data ../shared/data/mnist --epochs 1; rc=$?
end=$(date +%s.%N)
echo "# exit status $rc; install $(echo "$installed - $start" | bc) s, train $(echo "$end - $installed" | bc) s, total $(echo "$end - $start" | bc) s"
cd /work/fresh2
echo "# $(date -u +%FT%TZ) commit $(git rev-parse HEAD)"
echo '$ python3 -m venv .venv && .venv/bin/pip install -e ".[test]" && LENET_DATA=../shared/data/mnist .venv/bin/python -m pytest'
start=$(date +%s.%N)
python3 -m venv .venv && .venv/bin/pip install -q -e ".[test]" 2>&1 | grep -v "^WARNING: Location"; installed=$(date +%s.%N)
LENET_DATA=../shared/data/mnist .venv/bin/python -m pytest 2>&1 | tail -15; rc=$?
end=$(date +%s.%N)
echo "# exit status $rc; install $(echo "$installed - $start" | bc) s, tests $(echo "$end - $installed" | bc) s, total $(echo "$end - $start" | bc) s"
