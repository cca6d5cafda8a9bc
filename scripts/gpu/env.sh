# Source on the GPU machine after scripts/gpu/setup.sh: Python finds /tmp/site first, and the dynamic linker finds
# CUDA, cuBLAS and cuDNN in the image's nvidia-* Python packages, and perf_analyzer's libraries in /tmp/perf.
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia_libs=$(python3 -c 'import glob, os, site
dirs = {os.path.dirname(p) for sp in site.getsitepackages() for p in glob.glob(sp + "/nvidia/**/lib*/*.so*", recursive=True)}
print(":".join(sorted(dirs)))')
export LD_LIBRARY_PATH=${nvidia_libs}:/tmp/perf${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
