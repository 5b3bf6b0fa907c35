"""LLVM IR of an ahead-of-time entry (runtime/aot/entry.py) -> a relocatable ELF object for
one target, with llvmlite: a small malloc/free-based NRT and the C entry are linked in, every
other function is made internal (Numba's Python wrappers and helper calls then drop out), the
module is retargeted (triple, data layout, no host CPU attributes) and optimised with the
target's own machine (vector widths, instruction selection), then emitted as PIC small-model
object code. Its undefined symbols must be libc / libm functions the loader can resolve."""
from __future__ import annotations

import re

from edgeseq.errors import UnsupportedModelError
from edgeseq.runtime.native.elf import undefined_symbols
from edgeseq.runtime.native.layout import COLLECT, ENTRY, RELEASE
from edgeseq.runtime.native.targets import Target

# MemInfo as Numba lays it out (numba/core/runtime/nrt.cpp): refct, dtor, dtor_info, data,
# size, external allocator; the data follows the header in the same malloc block, aligned
_NRT = r"""
declare ptr @malloc(i64)
declare void @free(ptr)

define ptr @NRT_MemInfo_alloc_aligned(i64 %size, i32 %align) {
entry:
  %a0 = zext i32 %align to i64
  %small = icmp ult i64 %a0, 16
  %a = select i1 %small, i64 16, i64 %a0
  %t0 = add i64 %size, 48
  %t1 = add i64 %t0, %a
  %blk = call ptr @malloc(i64 %t1)
  %null = icmp eq ptr %blk, null
  br i1 %null, label %fail, label %ok
fail:
  ret ptr null
ok:
  %base = ptrtoint ptr %blk to i64
  %d0 = add i64 %base, 48
  %am1 = sub i64 %a, 1
  %d1 = add i64 %d0, %am1
  %mask = xor i64 %am1, -1
  %d2 = and i64 %d1, %mask
  %data = inttoptr i64 %d2 to ptr
  store i64 1, ptr %blk
  %p1 = getelementptr i8, ptr %blk, i64 8
  store ptr null, ptr %p1
  %p2 = getelementptr i8, ptr %blk, i64 16
  store ptr null, ptr %p2
  %p3 = getelementptr i8, ptr %blk, i64 24
  store ptr %data, ptr %p3
  %p4 = getelementptr i8, ptr %blk, i64 32
  store i64 %size, ptr %p4
  %p5 = getelementptr i8, ptr %blk, i64 40
  store ptr null, ptr %p5
  ret ptr %blk
}

define void @NRT_MemInfo_call_dtor(ptr %mi) {
entry:
  %p1 = getelementptr i8, ptr %mi, i64 8
  %dtor = load ptr, ptr %p1
  %none = icmp eq ptr %dtor, null
  br i1 %none, label %done, label %call
call:
  %p2 = getelementptr i8, ptr %mi, i64 16
  %info = load ptr, ptr %p2
  %p3 = getelementptr i8, ptr %mi, i64 24
  %data = load ptr, ptr %p3
  %p4 = getelementptr i8, ptr %mi, i64 32
  %size = load i64, ptr %p4
  call void %dtor(ptr %data, i64 %size, ptr %info)
  br label %done
done:
  call void @free(ptr %mi)
  ret void
}

; numba_attempt_nocopy_reshape (Numba's helper library) for C order only: a C-contiguous
; array (dims of 1 may have any stride) gets C-contiguous strides for its new dims; anything
; else returns 0, which the generated code turns into an error (status 1), never a wrong view
define i32 @numba_attempt_nocopy_reshape(i64 %nd, ptr %dims, ptr %strides, i64 %newnd,
                                         ptr %newdims, ptr %newstrides, i64 %itemsize,
                                         i32 %is_f_order) {
entry:
  %i = alloca i64
  %want = alloca i64
  %f = icmp ne i32 %is_f_order, 0
  br i1 %f, label %no, label %start
start:
  store i64 %nd, ptr %i
  store i64 %itemsize, ptr %want
  br label %old_loop
old_loop:
  %k = load i64, ptr %i
  %more = icmp sgt i64 %k, 0
  br i1 %more, label %old_body, label %new_start
old_body:
  %k1 = sub i64 %k, 1
  store i64 %k1, ptr %i
  %pd = getelementptr i64, ptr %dims, i64 %k1
  %d = load i64, ptr %pd
  %one = icmp eq i64 %d, 1
  br i1 %one, label %old_loop, label %old_check
old_check:
  %ps = getelementptr i64, ptr %strides, i64 %k1
  %s = load i64, ptr %ps
  %w = load i64, ptr %want
  %same = icmp eq i64 %s, %w
  %w2 = mul i64 %w, %d
  store i64 %w2, ptr %want
  br i1 %same, label %old_loop, label %no
new_start:
  store i64 %newnd, ptr %i
  store i64 %itemsize, ptr %want
  br label %new_loop
new_loop:
  %n = load i64, ptr %i
  %nmore = icmp sgt i64 %n, 0
  br i1 %nmore, label %new_body, label %yes
new_body:
  %n1 = sub i64 %n, 1
  store i64 %n1, ptr %i
  %pnd = getelementptr i64, ptr %newdims, i64 %n1
  %nd1 = load i64, ptr %pnd
  %pns = getelementptr i64, ptr %newstrides, i64 %n1
  %nw = load i64, ptr %want
  store i64 %nw, ptr %pns
  %nw2 = mul i64 %nw, %nd1
  store i64 %nw2, ptr %want
  br label %new_loop
yes:
  ret i32 1
no:
  ret i32 0
}

define void @NRT_Free(ptr %p) {
  call void @free(ptr %p)
  ret void
}

define void @RELEASE(i64 %addr) {
entry:
  %null = icmp eq i64 %addr, 0
  br i1 %null, label %done, label %dec
dec:
  %mi = inttoptr i64 %addr to ptr
  %old = atomicrmw sub ptr %mi, i64 1 acq_rel
  %last = icmp eq i64 %old, 1
  br i1 %last, label %free, label %done
free:
  call void @NRT_MemInfo_call_dtor(ptr %mi)
  br label %done
done:
  ret void
}

define void @COLLECT(ptr %table, ptr %desc, i64 %n) {
entry:
  %k = alloca i64
  store i64 0, ptr %k
  br label %loop
loop:
  %i = load i64, ptr %k
  %more = icmp slt i64 %i, %n
  br i1 %more, label %body, label %done
body:
  %i3 = mul i64 %i, 3
  %pd0 = getelementptr i64, ptr %desc, i64 %i3
  %off = load i64, ptr %pd0
  %pd1 = getelementptr i64, ptr %pd0, i64 1
  %dst = load i64, ptr %pd1
  %pd2 = getelementptr i64, ptr %pd0, i64 2
  %nb = load i64, ptr %pd2
  %pmi = getelementptr i64, ptr %table, i64 %off
  %mi = load i64, ptr %pmi
  %psrc = getelementptr i64, ptr %pmi, i64 1
  %src = load i64, ptr %psrc
  %has = icmp ne i64 %dst, 0
  %some = icmp sgt i64 %nb, 0
  %copy = and i1 %has, %some
  br i1 %copy, label %do_copy, label %release
do_copy:
  %dp = inttoptr i64 %dst to ptr
  %sp = inttoptr i64 %src to ptr
  call void @llvm.memcpy.p0.p0.i64(ptr %dp, ptr %sp, i64 %nb, i1 false)
  br label %release
release:
  call void @RELEASE(i64 %mi)
  %i1 = add i64 %i, 1
  store i64 %i1, ptr %k
  br label %loop
done:
  ret void
}

declare void @llvm.memcpy.p0.p0.i64(ptr, ptr, i64, i1)

define i64 @ENTRY(ptr %table) {
entry:
  %ret = alloca i64
  %exc = alloca ptr
  store i64 0, ptr %ret
  %arg = ptrtoint ptr %table to i64
  %st = call i32 @FUNCTION(ptr %ret, ptr %exc, i64 %arg)
  %ok = icmp eq i32 %st, 0
  br i1 %ok, label %good, label %bad
good:
  %r = load i64, ptr %ret
  ret i64 %r
bad:
  ret i64 2
}
"""

# symbols of the Numba runtime / helper library / CPython: never resolvable by the loader
_FORBIDDEN = re.compile(r"^(NRT_|numba_|Py|_Py)")


def _nrt_ir(function: str, signature: str) -> str:
    return (_NRT.replace("@RELEASE", "@" + RELEASE).replace("@ENTRY", "@" + ENTRY)
            .replace("@COLLECT", "@" + COLLECT)
            .replace("@FUNCTION", "@" + function)
            + f"\ndeclare i32 @{function}{signature}\n")


def _declared_signature(ir_text: str, function: str) -> str:
    m = re.search(r"^define[^@\n]*@" + re.escape(function) + r"(\([^)]*\))", ir_text, re.M)
    if m is None:
        raise UnsupportedModelError(f"the entry function {function} is not in the IR")
    return "(" + ", ".join(a.split()[0] for a in m.group(1)[1:-1].split(",")) + ")"


def emit_object(ir_text: str, function: str, target: Target) -> bytes:
    """Relocatable ELF object of the entry module for `target`; UnsupportedModelError naming
    a symbol the object would need from Numba's runtime or from Python."""
    from llvmlite import binding as llvm
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    # NOTE: no host CPU may leak into the code: attributes written by Numba's host target
    ir_text = re.sub(r'\s*"target-(cpu|features)"="[^"]*"', "", ir_text)
    foreign = sorted(set(re.findall(r"@(llvm\.(?:x86|aarch64|arm)\.[\w.]+)", ir_text)))
    if foreign:
        raise UnsupportedModelError(f"the compiled graph uses CPU-specific intrinsics "
                                    f"{', '.join(foreign[:5])}; it cannot be compiled for "
                                    f"{target.name} ahead of time")
    mod = llvm.parse_assembly(ir_text)
    mod.link_in(llvm.parse_assembly(_nrt_ir(function, _declared_signature(ir_text, function))))
    keep = {ENTRY, RELEASE, COLLECT}
    for f in mod.functions:
        if not f.is_declaration and f.name not in keep:
            f.linkage = "internal"
    for g in mod.global_variables:
        if not g.is_declaration:
            g.linkage = "internal"
    tm = llvm.Target.from_triple(target.triple).create_target_machine(
        cpu=target.cpu, features=target.features, opt=3, reloc="pic", codemodel="small")
    mod.triple = target.triple
    mod.data_layout = str(tm.target_data)
    _optimise(mod, tm)
    mod.verify()
    obj = tm.emit_object(mod)
    bad = sorted(s for s in undefined_symbols(obj) if _FORBIDDEN.match(s))
    if bad:
        raise UnsupportedModelError(
            f"the compiled code for {target.name} needs {', '.join(bad)}, which only Numba's "
            f"runtime or Python provide; the native loader cannot run it")
    return obj


def _optimise(mod, tm) -> None:
    """Numba's pipeline (numba/core/codegen.py, its defaults: loop vectorisation on, SLP
    off), with the target's machine: O3 function passes on every function, a "cheap" O3
    module pass with loop rotation, instcombine and jump threading, reference-count pruning,
    then the full O3 module pass."""
    from llvmlite import binding as llvm

    def builder():
        pto = llvm.create_pipeline_tuning_options(speed_level=3)
        pto.loop_vectorization = True
        pto.slp_vectorization = False
        return llvm.create_pass_builder(tm, pto)
    pb = builder()
    fpm = pb.getFunctionPassManager()
    for f in mod.functions:
        if not f.is_declaration:
            fpm.run(f, pb)
    pb = builder()
    cheap = pb.getModulePassManager()
    cheap.add_loop_rotate_pass()
    cheap.add_instruction_combine_pass()
    cheap.add_jump_threading_pass()
    cheap.add_refprune_pass()
    cheap.run(mod, pb)
    pb = builder()
    full = pb.getModulePassManager()
    full.add_refprune_pass()
    full.run(mod, pb)
