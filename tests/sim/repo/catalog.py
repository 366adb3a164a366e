"""What the simulator's apt repositories contain: package names, versions and dependency shapes.

Shapes follow the real control files:
  * Ubuntu archive (nvidia-graphics-drivers-<branch>[-server], debian/control of the 515-server source
    in canonical/nvidia-graphics-drivers): nvidia-utils-<F> Provides/Conflicts/Replaces nvidia-utils,
    nvidia-smi; nvidia-dkms-<F> Provides/Conflicts/Replaces nvidia-dkms-kernel; the driver metapackage
    pins its parts with "(= binary version)" and the kernel parts with "(<= X-1), (>= X)";
    transitional packages are "Depends: <new name>" with "Transitional package for <new name>".
  * CUDA repo: cuda-drivers-<branch> "X-1" Depends on the branch's packages with ">= X" only
    (dstackai/dstack#2355 quotes cuda-drivers-535 535.183.01-1), driver packages "X-0ubuntu1";
    from 580 the fabric manager is a package called nvidia-fabricmanager that only *Provides*
    nvidia-fabricmanager-580, so "nvidia-fabricmanager-580=<version>" cannot be installed from that
    repo (NVIDIA/gpu-driver-container#451).
  * libnvidia-container repo: the four toolkit packages, nvidia-container-toolkit pinning
    nvidia-container-toolkit-base to its own version.

Payloads are the simulator's (tests/sim/pkgsrc): see build_repo.py for how files are produced.
"""
from __future__ import annotations

from dataclasses import dataclass, field

UBUNTU_MAINT = "Ubuntu Core Developers <ubuntu-devel-discuss@lists.ubuntu.com>"
CUDA_MAINT = "cudatools <cudatools@nvidia.com>"
CTK_MAINT = "NVIDIA CORPORATION <cudatools@nvidia.com>"
NOTE = "\n .\n Built by the rigkeeper simulator: a stand-in with the real name, version and dependencies."

# --- Versions ---------------------------------------------------------------------------------

# Ubuntu noble archive: two versions per branch, older first.
UBUNTU_DRIVER_VERSIONS = {
    "535": ["535.247.01-0ubuntu0.24.04.1", "535.261.03-0ubuntu0.24.04.1"],
    "545": ["545.29.02-0ubuntu1", "545.29.06-0ubuntu0.24.04.1"],
    "550": ["550.144.03-0ubuntu0.24.04.1", "550.163.01-0ubuntu0.24.04.1"],
    "580": ["580.82.07-0ubuntu0.24.04.1", "580.95.05-0ubuntu0.24.04.1"],
}
# -server flavours (545 never had one in Ubuntu).
UBUNTU_SERVER_BRANCHES = ["535", "550", "580"]
# FACTS.md pitfall: in current archives the 535 -server packages are transitional and pull 580.
TRANSITIONAL = {"flavour": "535-server", "version": "535.309.01-0ubuntu0.24.04.2", "target": "580-server"}
# Open kernel module variants: -open for every desktop branch, -server-open for 580 only.
OPEN_FLAVOURS = ["535", "545", "550", "580", "580-server"]
FABRICMANAGER_BRANCHES = ["535", "550", "580"]

# CUDA repository (developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64).
CUDA_DRIVER_BRANCHES = ["535", "545", "550", "580"]
CUDA_OPEN_BRANCHES = ["550", "580"]


def upstream(version: str) -> str:
    return version.split("-")[0]


def cuda_driver_versions(branch: str) -> list[str]:
    return [upstream(v) + "-0ubuntu1" for v in UBUNTU_DRIVER_VERSIONS[branch]]


# CUDA toolkits: package suffix -> (toolkit deb version, nvcc, cudart, nvcc --version lines 2-3, build id)
# nvcc texts are verbatim from `nvcc --version` output quoted in public READMEs and issues.
CUDA_TOOLKITS = {
    "11-8": ("11.8.0-1", "11.8.89", "11.8.89", "2005-2022", "Wed_Sep_21_10:33:58_PDT_2022", "31833905_0"),
    "12-2": ("12.2.2-1", "12.2.140", "12.2.140", "2005-2023", "Tue_Aug_15_22:02:13_PDT_2023", "33191640_0"),
    "12-4": ("12.4.1-1", "12.4.131", "12.4.127", "2005-2024", "Thu_Mar_28_02:18:24_PDT_2024", "34097967_0"),
    "12-8": ("12.8.1-1", "12.8.93", "12.8.90", "2005-2025", "Fri_Feb_21_20:23:50_PST_2025", "35583870_0"),
    "13-0": ("13.0.2-1", "13.0.88", "13.0.96", "2005-2025", "Wed_Aug_20_01:58:59_PM_PDT_2025", "36424714_0"),
}
# Latest version of the per-major and global config-common packages (newest toolkit of that major).
CUDA_CONFIG_COMMON = {"11": "11.8.89-1", "12": "12.8.90-1", "13": "13.0.96-1", "": "13.0.96-1"}

CUDNN8_VERSIONS = ["8.9.7.29-1+cuda11.8", "8.9.7.29-1+cuda12.2"]
CUDNN9_VERSIONS = {"12": ["9.5.1.17-1", "9.13.0.50-1"], "13": ["9.13.0.50-1"]}

CTK_VERSIONS = ["1.17.8-1", "1.18.0-1"]

# --- Data model -------------------------------------------------------------------------------


@dataclass
class Deb:
    name: str
    version: str
    description: str
    arch: str = "amd64"
    section: str = "restricted/libs"
    maintainer: str = UBUNTU_MAINT
    source: str | None = None
    fields: dict[str, str] = field(default_factory=dict)   # Depends, Provides, Conflicts, ...
    files: dict[str, tuple[str, object]] = field(default_factory=dict)  # path -> (kind, arg)
    links: dict[str, str] = field(default_factory=dict)    # path -> target
    scripts: dict[str, str] = field(default_factory=dict)  # postinst, prerm, ...
    conffiles: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.version)

    @property
    def filename(self) -> str:
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.arch}.deb"


def _pvr(name: str) -> dict[str, str]:
    """Provides/Conflicts/Replaces one virtual name (the usual way to make flavours exclusive)."""
    return {"Provides": name, "Conflicts": name, "Replaces": name}


def doc(deb: Deb) -> Deb:
    deb.files[f"/usr/share/doc/{deb.name}/README.rigkeeper-sim"] = (
        "text", f"{deb.name} {deb.version}: rigkeeper simulator package (no NVIDIA software inside).\n")
    return deb


# --- Driver packages --------------------------------------------------------------------------


def driver_flavour(flavour: str, version: str, maint: str = UBUNTU_MAINT) -> list[Deb]:
    """The packages of one nvidia-graphics-drivers-<flavour> source at one version."""
    F, V, X = flavour, version, upstream(version)
    branch = F.split("-")[0]
    exact = f"(= {V})"
    kern = lambda n: f"{n} (<= {X}-1), {n} (>= {X})"  # noqa: E731
    src = f"nvidia-graphics-drivers-{F}"
    sect = "restricted/libs"

    def deb(name, desc, **kw) -> Deb:
        return doc(Deb(name=name, version=V, description=desc + NOTE, maintainer=maint, source=src,
                       section=kw.pop("section", sect), **kw))

    out = [
        deb(f"nvidia-kernel-common-{F}", "Shared files used with the kernel module",
            fields=_pvr("nvidia-kernel-common"),
            files={"/usr/lib/rigkeeper-sim/sim-modprobe": ("sim-modprobe", None)}),
        deb(f"nvidia-kernel-source-{F}", "NVIDIA kernel source package",
            fields={"Multi-Arch": "foreign", **_pvr("nvidia-kernel-source")},
            files={f"/usr/src/nvidia-{X}/README": ("text", f"NVIDIA kernel module source {X} (simulated)\n")}),
        deb(f"nvidia-dkms-{F}", "NVIDIA DKMS package",
            fields={"Multi-Arch": "foreign",
                    "Depends": kern(f"nvidia-kernel-source-{F}") + ", " + kern(f"nvidia-kernel-common-{F}"),
                    **_pvr("nvidia-dkms-kernel")},
            files={"/usr/lib/rigkeeper-sim/kmod-version": ("text", X + "\n"),
                   "/usr/lib/rigkeeper-sim/kmod-type": ("text", "proprietary\n")}),
        deb(f"nvidia-utils-{F}", "NVIDIA driver support binaries", section="restricted/utils",
            fields={"Depends": "python3", "Suggests": f"nvidia-driver-{F}",
                    "Provides": "nvidia-utils, nvidia-smi", "Conflicts": "nvidia-utils, nvidia-smi",
                    "Replaces": "nvidia-utils, nvidia-smi"},
            files={"/usr/bin/nvidia-smi": ("wrapper", ("nvidia_smi", "smi_main", X)),
                   "/usr/lib/rigkeeper-sim/nvidia_smi.py": ("nvsim", None)}),
        deb(f"libnvidia-compute-{F}", "NVIDIA libcompute package",
            fields={"Multi-Arch": "same",
                    "Provides": f"libnvidia-compute, libnvidia-ml1 (= {V}), libcuda1 (= {V})",
                    "Conflicts": "libnvidia-compute", "Replaces": "libnvidia-compute"},
            files={f"/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.{X}": ("placeholder", f"libnvidia-ml {X}"),
                   f"/usr/lib/x86_64-linux-gnu/libcuda.so.{X}": ("placeholder", f"libcuda {X}")},
            links={"/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1": f"libnvidia-ml.so.{X}",
                   "/usr/lib/x86_64-linux-gnu/libcuda.so.1": f"libcuda.so.{X}"}),
        deb(f"nvidia-compute-utils-{F}", "NVIDIA compute utilities", section="restricted/utils",
            fields={"Depends": f"libnvidia-compute-{F}, python3",
                    "Provides": "nvidia-compute-utils, nvidia-persistenced",
                    "Conflicts": "nvidia-compute-utils, nvidia-persistenced",
                    "Replaces": "nvidia-compute-utils, nvidia-persistenced"},
            files={"/usr/bin/nvidia-persistenced": ("wrapper", ("nvidia_persistenced", "persistenced_main", X)),
                   "/usr/lib/rigkeeper-sim/nvidia_persistenced.py": ("nvsim", None),
                   "/lib/systemd/system/nvidia-persistenced.service": ("persistenced-unit", branch)},
            scripts={"postinst": "persistenced-postinst"}),
        deb(f"libnvidia-common-{F}", "Shared files used by the NVIDIA libraries", arch="all",
            fields={"Multi-Arch": "foreign", **_pvr("libnvidia-common")}),
        deb(f"libnvidia-gl-{F}", "NVIDIA OpenGL/GLX/EGL/GLES GLVND libraries and Vulkan ICD",
            fields={"Multi-Arch": "same", "Depends": f"libnvidia-common-{F}",
                    "Provides": "libnvidia-gl, libglx-vendor, libegl-vendor",
                    "Conflicts": "libnvidia-gl", "Replaces": "libnvidia-gl"}),
        deb(f"libnvidia-extra-{F}", "Extra libraries for the NVIDIA driver",
            fields={"Multi-Arch": "same", **_pvr("libnvidia-extra")}),
        deb(f"libnvidia-decode-{F}", "NVIDIA Video Decoding runtime libraries",
            fields={"Multi-Arch": "same", "Depends": f"libnvidia-compute-{F} {exact}", **_pvr("libnvidia-decode")}),
        deb(f"libnvidia-encode-{F}", "NVENC Video Encoding runtime library",
            fields={"Multi-Arch": "same", **_pvr("libnvidia-encode")}),
        deb(f"libnvidia-cfg1-{F}", "NVIDIA binary OpenGL/GLX configuration library",
            fields={"Multi-Arch": "same", **_pvr("libnvidia-cfg1-any")}),
        deb(f"libnvidia-fbc1-{F}", "NVIDIA OpenGL-based Framebuffer Capture runtime library",
            fields={"Multi-Arch": "same", **_pvr("libnvidia-fbc1")}),
        deb(f"xserver-xorg-video-nvidia-{F}", "NVIDIA binary Xorg driver", section="restricted/x11",
            fields={"Depends": f"libnvidia-cfg1-{F} {exact}",
                    "Provides": "xorg-driver-binary, nvidia-driver-binary",
                    "Conflicts": "xorg-driver-binary, nvidia-driver-binary",
                    "Replaces": "xorg-driver-binary, nvidia-driver-binary"}),
        deb(f"nvidia-headless-no-dkms-{F}", "NVIDIA headless metapackage - no DKMS",
            fields={"Depends": ", ".join([kern(f"nvidia-kernel-common-{F}"), f"nvidia-kernel-source-{F} {exact}",
                                          f"libnvidia-compute-{F} {exact}", f"nvidia-compute-utils-{F} {exact}",
                                          f"libnvidia-cfg1-{F} {exact}"])}),
        deb(f"nvidia-headless-{F}", "NVIDIA headless metapackage",
            fields={"Depends": f"nvidia-headless-no-dkms-{F} {exact}, nvidia-dkms-{F} {exact}",
                    **_pvr("nvidia-headless")}),
        deb(f"nvidia-driver-{F}", "NVIDIA driver metapackage",
            fields={"Depends": ", ".join([
                f"libnvidia-gl-{F} {exact}", kern(f"nvidia-dkms-{F}"), kern(f"nvidia-kernel-common-{F}"),
                f"nvidia-kernel-source-{F} {exact}", f"libnvidia-compute-{F} {exact}",
                f"libnvidia-extra-{F} {exact}", f"nvidia-compute-utils-{F} {exact}",
                f"libnvidia-decode-{F} {exact}", f"libnvidia-encode-{F} {exact}", f"nvidia-utils-{F} {exact}",
                f"xserver-xorg-video-nvidia-{F} {exact}", f"libnvidia-cfg1-{F} {exact}",
                f"libnvidia-fbc1-{F} {exact}"]),
                "Suggests": "nvidia-settings, nvidia-prime (>= 0.8)"}),
    ]
    return out


def driver_open(flavour: str, version: str, maint: str = UBUNTU_MAINT) -> list[Deb]:
    """The -open kernel module variant: own source, DKMS and metapackages; same userspace."""
    F, V, X = flavour, version, upstream(version)
    O = f"{F}-open"
    exact = f"(= {V})"
    kern = lambda n: f"{n} (<= {X}-1), {n} (>= {X})"  # noqa: E731
    src = f"nvidia-graphics-drivers-{F}"

    def deb(name, desc, **kw) -> Deb:
        return doc(Deb(name=name, version=V, description=desc + NOTE, maintainer=maint, source=src, **kw))

    return [
        deb(f"nvidia-kernel-source-{O}", "NVIDIA kernel source package (open kernel modules)",
            fields={"Multi-Arch": "foreign", **_pvr("nvidia-kernel-source")},
            files={f"/usr/src/nvidia-{X}/README": ("text", f"NVIDIA open kernel module source {X} (simulated)\n")}),
        deb(f"nvidia-dkms-{O}", "NVIDIA DKMS package (open kernel modules)",
            fields={"Multi-Arch": "foreign",
                    "Depends": kern(f"nvidia-kernel-source-{O}") + ", " + kern(f"nvidia-kernel-common-{F}"),
                    **_pvr("nvidia-dkms-kernel")},
            files={"/usr/lib/rigkeeper-sim/kmod-version": ("text", X + "\n"),
                   "/usr/lib/rigkeeper-sim/kmod-type": ("text", "open\n")}),
        deb(f"nvidia-headless-no-dkms-{O}", "NVIDIA headless metapackage - no DKMS (open kernel modules)",
            fields={"Depends": ", ".join([kern(f"nvidia-kernel-common-{F}"), f"nvidia-kernel-source-{O} {exact}",
                                          f"libnvidia-compute-{F} {exact}", f"nvidia-compute-utils-{F} {exact}",
                                          f"libnvidia-cfg1-{F} {exact}"])}),
        deb(f"nvidia-headless-{O}", "NVIDIA headless metapackage (open kernel modules)",
            fields={"Depends": f"nvidia-headless-no-dkms-{O} {exact}, nvidia-dkms-{O} {exact}",
                    **_pvr("nvidia-headless")}),
        deb(f"nvidia-driver-{O}", "NVIDIA driver (open kernel modules) metapackage",
            fields={"Depends": ", ".join([
                f"libnvidia-gl-{F} {exact}", kern(f"nvidia-dkms-{O}"), kern(f"nvidia-kernel-common-{F}"),
                f"nvidia-kernel-source-{O} {exact}", f"libnvidia-compute-{F} {exact}",
                f"libnvidia-extra-{F} {exact}", f"nvidia-compute-utils-{F} {exact}",
                f"libnvidia-decode-{F} {exact}", f"libnvidia-encode-{F} {exact}", f"nvidia-utils-{F} {exact}",
                f"xserver-xorg-video-nvidia-{F} {exact}", f"libnvidia-cfg1-{F} {exact}",
                f"libnvidia-fbc1-{F} {exact}"])}),
    ]


def transitional(flavour: str, version: str, target: str) -> list[Deb]:
    """Every package name of <flavour> as an empty package depending on its <target> counterpart."""
    names = [d.name for d in driver_flavour(flavour, version)]
    out = []
    for n in names:
        new = n.replace(flavour, target)
        out.append(doc(Deb(name=n, version=version, source=f"nvidia-graphics-drivers-{target}",
                           arch="all" if n.startswith("libnvidia-common") else "amd64",
                           description=f"Transitional package for {new}\n This is a transitional package for "
                                       f"{new}, and can be\n safely removed after the installation is complete." + NOTE,
                           fields={"Depends": new, "Multi-Arch": "foreign"})))
    return out


def fabricmanager(branch: str, version: str, name: str | None = None, maint: str = UBUNTU_MAINT) -> Deb:
    """nvidia-fabricmanager-<branch>; name="nvidia-fabricmanager" gives the CUDA repo's 580+ shape."""
    X = upstream(version)
    if name is None:
        fields = _pvr("nvidia-fabricmanager")
    else:
        others = ", ".join(f"nvidia-fabricmanager-{b}" for b in FABRICMANAGER_BRANCHES if b != branch)
        fields = {"Provides": f"nvidia-fabricmanager-{branch}", "Conflicts": others, "Replaces": others}
    fields["Depends"] = "python3"
    deb = Deb(name=name or f"nvidia-fabricmanager-{branch}", version=version, maintainer=maint,
              section="restricted/utils", source=f"fabric-manager-{branch}",
              description="Fabric Manager for NVSwitch based systems." + NOTE, fields=fields,
              files={"/usr/bin/nv-fabricmanager": ("wrapper", ("nv_fabricmanager", "fabricmanager_main", X)),
                     "/usr/lib/rigkeeper-sim/nv_fabricmanager.py": ("nvsim", None),
                     "/usr/share/nvidia/nvswitch/fabricmanager.cfg": ("fm-cfg", None),
                     "/lib/systemd/system/nvidia-fabricmanager.service": ("fm-unit", None)},
              conffiles=["/usr/share/nvidia/nvswitch/fabricmanager.cfg"],
              scripts={"postinst": "daemon-reload-postinst"})
    return doc(deb)


# --- CUDA toolkit, cuDNN, keyring ---------------------------------------------------------------


def cuda_toolkit(suffix: str) -> list[Deb]:
    tk, nvcc, cudart, years, built, build = CUDA_TOOLKITS[suffix]
    major, minor = suffix.split("-")
    dotted = f"{major}.{minor}"
    home = f"/usr/local/cuda-{dotted}"
    lib = f"{home}/targets/x86_64-linux/lib"
    cm = dict(maintainer=CUDA_MAINT, section="multiverse/devel")
    so = f"libcudart.so.{cudart}"
    nvcc_text = ("nvcc: NVIDIA (R) Cuda compiler driver\n"
                 f"Copyright (c) {years} NVIDIA Corporation\n"
                 f"Built on {built}\n"
                 f"Cuda compilation tools, release {dotted}, V{nvcc}\n"
                 f"Build cuda_{dotted}.r{dotted}/compiler.{build}\n")
    version_json = ("{\n"
                    f'   "cuda" : {{\n      "name" : "CUDA SDK",\n      "version" : "{upstream(tk)}"\n   }},\n'
                    f'   "cuda_cudart" : {{\n      "name" : "CUDA Runtime (cudart)",\n      "version" : "{cudart}"\n   }},\n'
                    f'   "cuda_nvcc" : {{\n      "name" : "CUDA NVCC",\n      "version" : "{nvcc}"\n   }}\n'
                    "}\n")
    prio = f"{major}{minor}"
    return [
        doc(Deb(name=f"cuda-nvcc-{suffix}", version=f"{nvcc}-1", description=f"CUDA nvcc {dotted}" + NOTE, **cm,
                files={f"{home}/bin/nvcc": ("nvcc", nvcc_text)})),
        doc(Deb(name=f"cuda-cudart-{suffix}", version=f"{cudart}-1", description=f"CUDA Runtime native Libraries {dotted}" + NOTE,
                **cm, files={f"{lib}/{so}": ("placeholder", f"libcudart {cudart}")},
                links={f"{lib}/libcudart.so.{major}": so, f"{home}/lib64": "targets/x86_64-linux/lib"})),
        doc(Deb(name=f"cuda-toolkit-{suffix}-config-common", version=f"{cudart}-1", arch="all",
                description=f"Common config package for CUDA Toolkit {dotted}." + NOTE, **cm,
                files={home: ("dir", None)},
                scripts={"postinst": ("cuda-alt-postinst", (home, major, prio)),
                         "prerm": ("cuda-alt-prerm", (home, major))})),
        doc(Deb(name=f"cuda-toolkit-{suffix}", version=tk, description=f"CUDA Toolkit {dotted} meta-package" + NOTE, **cm,
                fields={"Depends": f"cuda-nvcc-{suffix} (>= {nvcc}), cuda-cudart-{suffix} (>= {cudart}), "
                                   f"cuda-toolkit-{suffix}-config-common, cuda-toolkit-{major}-config-common, "
                                   "cuda-toolkit-config-common"},
                files={f"{home}/version.json": ("text", version_json)})),
    ]


def cuda_config_common() -> list[Deb]:
    out = []
    for major, ver in CUDA_CONFIG_COMMON.items():
        name = f"cuda-toolkit-{major}-config-common" if major else "cuda-toolkit-config-common"
        conf = f"/etc/ld.so.conf.d/988_cuda-{major}.conf" if major else "/etc/ld.so.conf.d/000_cuda.conf"
        target = f"/usr/local/cuda-{major}/targets/x86_64-linux/lib" if major else "/usr/local/cuda/targets/x86_64-linux/lib"
        out.append(doc(Deb(name=name, version=ver, arch="all", maintainer=CUDA_MAINT, section="multiverse/devel",
                           description="Common config package for CUDA Toolkit." + NOTE,
                           files={conf: ("text", target + "\n")}, conffiles=[conf],
                           scripts={"postinst": "ldconfig-postinst"})))
    return out


def cudnn() -> list[Deb]:
    lib = "/usr/lib/x86_64-linux-gnu"
    inc = "/usr/include/x86_64-linux-gnu"
    cm = dict(maintainer=CUDA_MAINT, section="multiverse/libs")
    out = []

    def header(major, minor, patch, mult):
        return (f"/* cudnn_version.h (rigkeeper simulator) */\n#ifndef CUDNN_VERSION_H_\n#define CUDNN_VERSION_H_\n\n"
                f"#define CUDNN_MAJOR {major}\n#define CUDNN_MINOR {minor}\n#define CUDNN_PATCHLEVEL {patch}\n\n"
                f"#define CUDNN_VERSION (CUDNN_MAJOR * {mult} + CUDNN_MINOR * 100 + CUDNN_PATCHLEVEL)\n\n#endif\n")

    for v in CUDNN8_VERSIONS:
        up = v.split("-")[0]           # 8.9.7.29
        so3 = ".".join(up.split(".")[:3])  # 8.9.7
        out.append(doc(Deb(name="libcudnn8", version=v, description="cuDNN runtime libraries" + NOTE, **cm,
                           files={f"{lib}/libcudnn.so.{so3}": ("placeholder", f"libcudnn {up}")},
                           links={f"{lib}/libcudnn.so.8": f"libcudnn.so.{so3}"})))
        out.append(doc(Deb(name="libcudnn8-dev", version=v, description="cuDNN development libraries and headers" + NOTE, **cm,
                           fields={"Depends": f"libcudnn8 (= {v})"},
                           files={f"{inc}/cudnn_v8.h": ("text", '#include "cudnn_version.h"\n'),
                                  f"{inc}/cudnn_version_v8.h": ("text", header(*so3.split("."), 1000))},
                           scripts={"postinst": ("cudnn-alt-postinst", ("8", "80")),
                                    "prerm": ("cudnn-alt-prerm", ("8",))})))
    for cuda_major, versions in CUDNN9_VERSIONS.items():
        other = "13" if cuda_major == "12" else "12"
        for v in versions:
            up = v.split("-")[0]
            so3 = ".".join(up.split(".")[:3])
            rt = f"libcudnn9-cuda-{cuda_major}"
            dev = f"libcudnn9-dev-cuda-{cuda_major}"
            out.append(doc(Deb(name=rt, version=v, description=f"cuDNN runtime libraries for CUDA {cuda_major}" + NOTE, **cm,
                               fields={"Conflicts": f"libcudnn9-cuda-{other}"},
                               files={f"{lib}/libcudnn.so.{so3}": ("placeholder", f"libcudnn {up} cuda{cuda_major}")},
                               links={f"{lib}/libcudnn.so.9": f"libcudnn.so.{so3}"})))
            out.append(doc(Deb(name=dev, version=v, description=f"cuDNN development headers for CUDA {cuda_major}" + NOTE, **cm,
                               fields={"Depends": f"{rt} (= {v})", "Conflicts": f"libcudnn9-dev-cuda-{other}"},
                               files={f"{inc}/cudnn_v9.h": ("text", '#include "cudnn_version.h"\n'),
                                      f"{inc}/cudnn_version_v9.h": ("text", header(*so3.split("."), 10000))},
                               scripts={"postinst": ("cudnn-alt-postinst", ("9", "90")),
                                        "prerm": ("cudnn-alt-prerm", ("9",))})))
            out.append(doc(Deb(name=f"cudnn9-cuda-{cuda_major}", version=v, arch="all",
                               description=f"NVIDIA cuDNN for CUDA {cuda_major} (meta-package)" + NOTE, **cm,
                               fields={"Depends": f"{rt} (= {v}), {dev} (= {v})"})))
    return out


def cuda_keyring() -> Deb:
    lst = "/etc/apt/sources.list.d/cuda-ubuntu2404-x86_64.list"
    return doc(Deb(name="cuda-keyring", version="1.1-1", arch="all", maintainer=CUDA_MAINT, section="multiverse/misc",
                   description="GPG keyring for the CUDA repository" + NOTE,
                   files={"/usr/share/keyrings/cuda-archive-keyring.gpg": ("keyring", None),
                          lst: ("cuda-list", None)},
                   conffiles=[lst]))


def cuda_drivers(branch: str, version: str) -> Deb:
    X = upstream(version)
    parts = ["libnvidia-common", "libnvidia-compute", "libnvidia-decode", "libnvidia-encode",
             "libnvidia-extra", "libnvidia-fbc1", "libnvidia-gl", "nvidia-compute-utils", "nvidia-dkms",
             "nvidia-driver", "nvidia-kernel-common", "nvidia-kernel-source", "nvidia-utils",
             "xserver-xorg-video-nvidia"]
    return doc(Deb(name=f"cuda-drivers-{branch}", version=f"{X}-1", maintainer=CUDA_MAINT, section="multiverse/metapackages",
                   description=f"CUDA Driver meta-package, branch-specific ({branch})" + NOTE,
                   fields={"Depends": ", ".join(f"{p}-{branch} (>= {X})" for p in parts)}))


def nvidia_open(branch: str, version: str) -> Deb:
    X = upstream(version)
    return doc(Deb(name=f"nvidia-open-{branch}", version=f"{X}-1", maintainer=CUDA_MAINT, section="multiverse/metapackages",
                   description=f"NVIDIA driver with open kernel modules, branch {branch} (meta-package)" + NOTE,
                   fields={"Depends": f"nvidia-driver-{branch}-open (>= {X}), nvidia-dkms-{branch}-open (>= {X})"}))


# --- Container toolkit ------------------------------------------------------------------------

# Toolkit 1.18 added nvidia-cdi-refresh.{path,service}, enabled by the base package's postinst
# (NVIDIA/nvidia-container-toolkit packaging/debian/nvidia-container-toolkit-base.{install,postinst}).
CDI_REFRESH_FILES = {f"/etc/systemd/system/nvidia-cdi-refresh.{u}": ("pkgsrc", f"nvidia-cdi-refresh.{u}")
                     for u in ("path", "service")}


def container_toolkit(version: str) -> list[Deb]:
    X = upstream(version)
    cm = dict(maintainer=CTK_MAINT, section="utils")
    return [
        doc(Deb(name="libnvidia-container1", version=version, description="NVIDIA container runtime library" + NOTE,
                fields={"Multi-Arch": "same"}, **cm,
                files={f"/usr/lib/x86_64-linux-gnu/libnvidia-container.so.{X}": ("placeholder", f"libnvidia-container {X}")},
                links={"/usr/lib/x86_64-linux-gnu/libnvidia-container.so.1": f"libnvidia-container.so.{X}"})),
        doc(Deb(name="libnvidia-container-tools", version=version,
                description="NVIDIA container runtime library (command-line tools)" + NOTE, **cm,
                fields={"Depends": f"libnvidia-container1 (>= {version})"},
                files={"/usr/bin/nvidia-container-cli": ("container-cli", X)})),
        doc(Deb(name="nvidia-container-toolkit-base", version=version, description="NVIDIA Container Toolkit Base" + NOTE, **cm,
                fields={"Depends": "python3", "Breaks": "nvidia-container-runtime (<= 3.5.0-1), nvidia-container-runtime-hook",
                        "Replaces": "nvidia-container-runtime (<= 3.5.0-1), nvidia-container-runtime-hook"},
                files={"/usr/bin/nvidia-ctk": ("ctk", X),
                       "/usr/bin/nvidia-container-runtime": ("container-runtime", None),
                       "/etc/nvidia-container-runtime/config.toml": ("ctk-config", None),
                       **(CDI_REFRESH_FILES if X >= "1.18" else {})},
                scripts={"postinst": "cdi-refresh-postinst"} if X >= "1.18" else {},
                conffiles=["/etc/nvidia-container-runtime/config.toml"])),
        doc(Deb(name="nvidia-container-toolkit", version=version, description="NVIDIA Container toolkit" + NOTE, **cm,
                fields={"Depends": f"nvidia-container-toolkit-base (= {version}), "
                                   f"libnvidia-container-tools (>= {version}), libnvidia-container-tools (<< 2.0.0)"},
                files={"/usr/bin/nvidia-container-runtime-hook": ("runtime-hook", None)})),
    ]


# --- The three repositories -------------------------------------------------------------------


def ubuntu_archive() -> list[Deb]:
    debs: list[Deb] = []
    for branch, versions in UBUNTU_DRIVER_VERSIONS.items():
        flavours = [branch] + ([f"{branch}-server"] if branch in UBUNTU_SERVER_BRANCHES else [])
        for F in flavours:
            for v in versions:
                debs += driver_flavour(F, v)
                if F in OPEN_FLAVOURS:
                    debs += driver_open(F, v)
        if branch in FABRICMANAGER_BRANCHES:
            for v in versions:
                debs.append(fabricmanager(branch, v))
    t = TRANSITIONAL
    debs += transitional(t["flavour"], t["version"], t["target"])
    return debs


def cuda_repo() -> list[Deb]:
    debs: list[Deb] = [cuda_keyring()]
    for branch in CUDA_DRIVER_BRANCHES:
        for v in cuda_driver_versions(branch):
            debs += driver_flavour(branch, v, maint=CUDA_MAINT)
            debs += driver_open(branch, v, maint=CUDA_MAINT)
            debs.append(cuda_drivers(branch, v))
            if branch in CUDA_OPEN_BRANCHES:
                debs.append(nvidia_open(branch, v))
            if branch in FABRICMANAGER_BRANCHES:
                fm_version = f"{upstream(v)}-1"
                if int(branch) >= 580:
                    debs.append(fabricmanager(branch, fm_version, name="nvidia-fabricmanager", maint=CUDA_MAINT))
                else:
                    debs.append(fabricmanager(branch, fm_version, maint=CUDA_MAINT))
    for suffix in CUDA_TOOLKITS:
        debs += cuda_toolkit(suffix)
    debs += cuda_config_common()
    debs += cudnn()
    return debs


def container_repo() -> list[Deb]:
    debs: list[Deb] = []
    for v in CTK_VERSIONS:
        debs += container_toolkit(v)
    return debs


def repositories() -> dict[str, list[Deb]]:
    return {"ubuntu": ubuntu_archive(), "cuda": cuda_repo(), "libnvidia-container": container_repo()}
