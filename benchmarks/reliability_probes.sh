#!/usr/bin/env bash
# The reliability probes of docs/reliability.md, re-run on tiny runs (about 4 min on 2 cores), each printing
# what rpnet did: benchmarks/reliability_probes.sh EMPTY_DIR
HERE=$(cd "$(dirname "$0")/.." && pwd)
R=${RPNET:-$HERE/.venv/bin/rpnet}
P=${PYTHON:-$HERE/.venv/bin/python}
T=${1:?usage: benchmarks/reliability_probes.sh EMPTY_DIR}; mkdir -p $T; T=$(cd $T && pwd); cd $T
TINY="--set train_cam.epochs=1 --set train_cam.max_steps=1 --set train_irn.max_steps=1 --set train_seg.max_steps=1 --set train_cam.batch_size=4 --set train_cam.crop_size=64 --set train_cam.resize_long=[56,72] --set make_cam.scales=[1.0] --set ir_label.workers=0 --set train_irn.epochs=1 --set train_irn.batch_size=4 --set train_irn.crop_size=64 --set train_irn.path_radius=3 --set pseudo.steps=4 --set train_seg.epochs=1 --set train_seg.batch_size=4 --set train_seg.crop_size=64 --set eval_seg.scales=[1.0] --set device=cpu"
CFG=$HERE/configs/synthetic.yaml
say() { echo; echo "=== $*"; }
$R synth data --n-train 8 --n-val 4 --size 64 >/dev/null 2>&1
$R run $CFG --set data.root=$T/data --set work_dir=$T/W $TINY >/dev/null 2>&1; echo "first run: exit $?"

say "1. a user file in a stage folder, then a changed setting"
echo keep > W/train_cam/precious.txt
$R run $CFG --set data.root=$T/data --set work_dir=$T/W $TINY --set train_cam.lr=0.02 2>&1 | grep -v INFO | tail -2; echo "exit ${PIPESTATUS[0]}; precious.txt: $(cat W/train_cam/precious.txt)"
rm W/train_cam/precious.txt

say "2. rpnet synth over a user's folder"
mkdir -p mine/images; echo "image,tags" > mine/tags.csv
$R synth mine --format folder --n-train 2 --n-val 0 --size 64 2>&1 | tail -1; echo "exit ${PIPESTATUS[0]}; tags.csv: $(cat mine/tags.csv); images: $(ls mine/images | wc -l)"

say "3. the same dataset by a relative path and by a symlink"
ln -sfn $T/data datalink
$R run $CFG --set data.root=datalink --set work_dir=$T/W $TINY --until train-cam 2>&1 | grep -o "run: train-cam.*" | head -1
$R run $CFG --set data.root=data --set work_dir=$T/W $TINY --until train-cam 2>&1 | grep -o "run: train-cam.*" | head -1

say "4. export-masks after classes.txt changed"
$R run $CFG --set data.root=$T/data --set work_dir=$T/W $TINY >/dev/null 2>&1
cp -p data/classes.txt classes.bak
printf 'background\nbird\ncar\nboat\ncat\nperson\nplane\n' > data/classes.txt
$R export-masks W --out exported 2>&1 | tail -1; echo "exit ${PIPESTATUS[0]}"
cp -p classes.bak data/classes.txt

say "5. a tags row with commas (folder layout)"
$R synth fold --format folder --n-train 8 --n-val 4 --size 64 >/dev/null 2>&1
sed -i 's/^synth_000001.png,.*/synth_000001.png,cat,person,dog/' fold/tags.csv
$R check-data $CFG --set data.root=fold --set data.format=folder 2>&1 | grep -i "dog\|error" | head -2

say "6. a 16-bit mask with value 259"
$R synth fold6 --format folder --n-train 8 --n-val 4 --size 64 >/dev/null 2>&1
$P -c "
import numpy as np; from PIL import Image
Image.fromarray(np.full((64,64),259,np.uint16)).save('fold6/masks/synth_000002.png')"
$R check-data $CFG --set data.root=fold6 --set data.format=folder 2>&1 | grep -i "259\|error" | head -2

say "8. predict on a folder with a .gif"
mkdir -p pics; $P -c "
import numpy as np; from PIL import Image
Image.fromarray(np.zeros((40,40,3),np.uint8)).save('pics/a.png'); Image.fromarray(np.zeros((40,40),np.uint8)).save('pics/b.gif')"
$R predict --weights W/train_seg/model.safetensors pics --out predicted --device cpu 2>&1 | tail -1; ls predicted/masks

say "9. a corrupt CAM under rpnet run"
$R run $CFG --set data.root=$T/data --set work_dir=$T/W $TINY >/dev/null 2>&1  # settle after item 4
f=$(ls W/make_cam/cams/*.npz | head -1); head -c 100 $f > $f.x; mv $f.x $f
$R run $CFG --set data.root=$T/data --set work_dir=$T/W $TINY --set pseudo.beta=8 2>&1 | grep -E "WARNING|error|run: make-cam" | cut -c1-220 | head -4; echo "exit ${PIPESTATUS[0]}"
$R status W | head -4

say "11. an image over PIL's limit in predict"
$P -c "
from PIL import Image; Image.new('L', (20000, 10000)).save('pics/huge.png')"
$R predict --weights W/train_seg/model.safetensors pics --out predicted2 --device cpu 2>&1 | grep -E "huge|error" | head -2; ls predicted2/masks

say "13. a binary config, predict --scales nan, a latin-1 split file, status | head, a file where a stage folder goes"
head -c 200 /bin/ls > bad.yaml; $R run bad.yaml 2>&1 | tail -1
$R predict --weights W/train_seg/model.safetensors pics --out p3 --scales nan 2>&1 | tail -1
cp -r data data13; printf 'caf\xe9\n' > data13/ImageSets/Segmentation/train.txt
$R check-data $CFG --set data.root=data13 2>&1 | grep -i "utf" | head -1
$R status W | head -1; echo "status | head: exit ${PIPESTATUS[0]}"
mkdir -p W2; echo x > W2/train_cam
$R run $CFG --set data.root=$T/data --set work_dir=$T/W2 $TINY 2>&1 | tail -1

say "15. BOM, 1e-3, duplicate keys, momentum 2"
$R run $CFG --set data.root=$T/data --set work_dir=$T/W3 $TINY --set train_cam.lr=1e-3 --until train-cam >/dev/null 2>&1; echo "lr=1e-3: exit $?"; grep "lr:" W3/train_cam/config.yaml
printf 'train_cam:\n  lr: 0.1\n  lr: 0.01\n' > dup.yaml; $R run dup.yaml 2>&1 | grep -o "key 'lr' is given twice.*" | head -1
printf '\xef\xbb\xbfimage,tags\nsynth_000000.png,boat\n' > bomtags.csv; head -c 3 bomtags.csv | od -c | head -1
$R run $CFG --set train_cam.momentum=2 2>&1 | tail -1
