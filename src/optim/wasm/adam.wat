;; Adam/AdamW step kernels in WebAssembly SIMD128, bit-identical to kernel32/kernel64 in
;; src/optim/adam.ts (and so to torch 1.13's foreach=False CPU step on AVX2).
;; Assembled by scripts/build-wasm.ts (npm run build:wasm, wabt with relaxed SIMD on) into
;; adam.wasm, which is committed.
;;
;; Two kernels per dtype, same arguments and results:
;;  - adam_f32 / adam_f64: standard SIMD128 only, fused multiply-adds emulated exactly;
;;  - adam_f32_fma / adam_f64_fma: the same with relaxed SIMD's relaxed_madd as the fused
;;    multiply-add. relaxed_madd may round once (fused) or twice, as the engine and CPU choose;
;;    kernel.ts calls these only after fma_probe showed it fused on this engine and CPU (V8 on
;;    x86-64 with FMA3: vfmadd). Relaxed SIMD is in the module itself (not a second module): the
;;    Worker imports the module statically, so a runtime rejecting relaxed SIMD would fail to load
;;    either way; one module keeps one memory, one import and createWasmAdam(module) unchanged.
;;
;; Every kernel works in place on five arrays in linear memory (params, grads, m, v, v_max; byte
;; offsets, 16-byte alignment recommended) and takes the step's scalars already rounded to the
;; dtype (the JS wrapper computes them exactly as adam.ts does):
;;   sign   = -1 with maximize, else 1          decay = 1 - lr*wd for AdamW, else exactly 1
;;   b1, omb1 = beta1, 1-beta1                  b2, omb2 = beta2, 1-beta2
;;   eps, wd, bc2s = sqrt(1-beta2^t), nss = -lr/(1-beta1^t)
;;   flags: bit 0 = L2 weight decay (g += wd*p), bit 1 = amsgrad (v_max is read and written)
;; Per element, in torch's order:
;;   g = sign*grad; [g = fma(p, wd, g)]; p = p*decay; m = fma(g, omb1, m*b1);
;;   v = fma(omb2*g, g, v*b2); s = [max(v_max, v) ->] v; denom = sqrt(s)/bc2s + eps;
;;   p = p + (nss*m)/denom
;;
;; float32: 4 lanes. Every op but the fused multiply-adds is one correctly rounded f32x4 op (the
;; f64 op then fround of the JS kernel rounds the same, 53 >= 2*24+2; f32x4.max has Math.max's NaN
;; and +-0 rules).
;; adam_f32: fma(a, b, c) = a*b + c computed in f64 (the product of two float32 is exact in
;; f64) and demoted to f32. fma32 of src/optim/fma.ts differs from that demotion only where the f64
;; sum s is exactly halfway between two float32 and the exact sum is not. The vector code flags:
;;  - "midpoint": the low 29 bits of s's mantissa are 1<<28 (the halfway points for |s| in the
;;    float32 normal range);
;;  - "tiny": 0 < |demote(s)| <= 2^-126 (the subnormal range, where halfway points have fewer
;;    bits; s = +-2^-150, demoted to 0, is always an exact sum). For m and v only where g != 0:
;;    with g = 0 both products are 0 and the sum is c itself, exact.
;; A vector with a flagged lane is redone by the scalar path ($elem32, with fma32 op for op, TwoSum
;; error term included) before anything of it is stored. Flags are rare on real data (a few per
;; million elements, mostly exact halfway sums, which the scalar path leaves as they are).
;; adam_f32_fma: fma = f32x4.relaxed_madd, fused: the correctly rounded fma32 (subnormals
;; included), so no lane needs the scalar path. The divider is then its floor, so sqrt(s)/bc2s is
;; computed without it, as demote(promote(x) * r) with r = 1/bc2s rounded to f64 (x = sqrt(s)):
;;   Claim: for float32 x >= 0 (0, normal, inf or NaN) and float32 c in [2^-60, 1] (kernel.ts
;;   checks; bc2s >= 2^-27 for any beta2 < 1), demote(x*r) = RN32(x/c), the correctly rounded f32
;;   division. Zero, inf and NaN pass through both alike (r > 0 is finite). sqrt of a positive
;;   float32 is >= 2^-74.5, so x is normal and x/c lies in [2^-75, 2^124], inside the f32 normal
;;   range. Let x/c lie in [2^k, 2^(k+1)); the float32 midpoints there are odd multiples of
;;   2^(k-24). Write x = X*2^a, c = C*2^b with 24-bit integers X, C; x >= 2^k*c >= 2^(k+23+b)
;;   forces a >= k+b, so x - mid*c is a multiple of 2^(k-24+b), and it is not 0 (a quotient of two
;;   float32 is never a float32 midpoint: mid*c has more than 24 significant bits). So
;;   |x/c - mid| >= 2^(k-24+b)/c > 2^(k-48) for every midpoint. And r = (1/c)(1+e1), x*r rounded
;;   to f64 = (x/c)(1+e1)(1+e2) with |e1|, |e2| <= 2^-53: its distance to x/c is below
;;   2^(k+1)*2^-51.9 < 2^(k-48). No midpoint lies between x/c and the f64 product (nor on the
;;   product), so both round to the same float32. Measured: 5-15% faster than f32x4.div here; on
;;   adam_f32 it was slower (that loop is bound by the emulation, not the divider), so it divides.
;;
;; float64: 2 lanes; fma64 of src/optim/fma.ts (Dekker product error + TwoSum sum error) op for
;; op. Where a lane's corrected sum is not finite (overflow, NaN), fma64 falls back to plain a*b + c:
;; such a vector is redone by the scalar path ($elem64, which has the fallback). adam_f64_fma gets
;; the same product error from one relaxed_madd (see there).

(module
  (memory (export "memory") 1)

  ;; The current call's arrays and scalars, for the scalar paths ($elem32 / $elem64).
  (global $pP (mut i32) (i32.const 0))
  (global $pG (mut i32) (i32.const 0))
  (global $pM (mut i32) (i32.const 0))
  (global $pV (mut i32) (i32.const 0))
  (global $pVM (mut i32) (i32.const 0))
  (global $l2 (mut i32) (i32.const 0))
  (global $ams (mut i32) (i32.const 0))
  (global $sign32 (mut f32) (f32.const 1))
  (global $b1_32 (mut f32) (f32.const 0))
  (global $omb1_32 (mut f32) (f32.const 0))
  (global $b2_32 (mut f32) (f32.const 0))
  (global $omb2_32 (mut f32) (f32.const 0))
  (global $eps32 (mut f32) (f32.const 0))
  (global $wd32 (mut f32) (f32.const 0))
  (global $decay32 (mut f32) (f32.const 1))
  (global $bc2s32 (mut f32) (f32.const 1))
  (global $nss32 (mut f32) (f32.const 0))
  (global $sign64 (mut f64) (f64.const 1))
  (global $b1_64 (mut f64) (f64.const 0))
  (global $omb1_64 (mut f64) (f64.const 0))
  (global $b2_64 (mut f64) (f64.const 0))
  (global $omb2_64 (mut f64) (f64.const 0))
  (global $eps64 (mut f64) (f64.const 0))
  (global $wd64 (mut f64) (f64.const 0))
  (global $decay64 (mut f64) (f64.const 1))
  (global $bc2s64 (mut f64) (f64.const 1))
  (global $nss64 (mut f64) (f64.const 0))

  ;; ---------------------------------------------------------------------------------------------
  ;; float32

  ;; fma32(a, b, c) of src/optim/fma.ts: float32 fma, correctly rounded.
  (func $fma32 (param $a f32) (param $b f32) (param $c f32) (result f32)
    (local $p f64) (local $s f64) (local $r f32) (local $d f64) (local $other f64)
    (local $bb f64) (local $err f64)
    (local.set $p (f64.mul (f64.promote_f32 (local.get $a)) (f64.promote_f32 (local.get $b))))
    (local.set $s (f64.add (local.get $p) (f64.promote_f32 (local.get $c))))
    (local.set $r (f32.demote_f64 (local.get $s)))
    (local.set $d (f64.sub (local.get $s) (f64.promote_f32 (local.get $r))))
    (if (f64.ne (local.get $d) (f64.const 0))
      (then
        ;; the float32 on the other side of s, if s is a midpoint
        (local.set $other
          (f64.add (f64.promote_f32 (local.get $r)) (f64.mul (f64.const 2) (local.get $d))))
        (if (f64.eq (f64.promote_f32 (f32.demote_f64 (local.get $other))) (local.get $other))
          (then
            ;; TwoSum: the exact sum is s + err
            (local.set $bb (f64.sub (local.get $s) (local.get $p)))
            (local.set $err
              (f64.add
                (f64.sub (local.get $p) (f64.sub (local.get $s) (local.get $bb)))
                (f64.sub (f64.promote_f32 (local.get $c)) (local.get $bb))))
            (if (f64.ne (local.get $err) (f64.const 0))
              (then
                (return
                  (select
                    (f32.demote_f64 (local.get $other))
                    (local.get $r)
                    (i32.eq
                      (f64.gt (local.get $err) (f64.const 0))
                      (f64.gt (local.get $d) (f64.const 0)))))))))))
    (local.get $r))

  ;; One float32 element at byte offset $o of every array: kernel32 of src/optim/adam.ts.
  (func $elem32 (param $o i32)
    (local $p f32) (local $g f32) (local $m f32) (local $v f32) (local $s f32)
    (local.set $p (f32.load (i32.add (global.get $pP) (local.get $o))))
    (local.set $g
      (f32.mul (global.get $sign32) (f32.load (i32.add (global.get $pG) (local.get $o)))))
    (if (global.get $l2)
      (then (local.set $g (call $fma32 (local.get $p) (global.get $wd32) (local.get $g)))))
    (local.set $p (f32.mul (local.get $p) (global.get $decay32)))
    (local.set $m
      (call $fma32 (local.get $g) (global.get $omb1_32)
        (f32.mul (f32.load (i32.add (global.get $pM) (local.get $o))) (global.get $b1_32))))
    (local.set $v
      (call $fma32 (f32.mul (global.get $omb2_32) (local.get $g)) (local.get $g)
        (f32.mul (f32.load (i32.add (global.get $pV) (local.get $o))) (global.get $b2_32))))
    (f32.store (i32.add (global.get $pM) (local.get $o)) (local.get $m))
    (f32.store (i32.add (global.get $pV) (local.get $o)) (local.get $v))
    (local.set $s (local.get $v))
    (if (global.get $ams)
      (then
        (local.set $s
          (f32.max (f32.load (i32.add (global.get $pVM) (local.get $o))) (local.get $v)))
        (f32.store (i32.add (global.get $pVM) (local.get $o)) (local.get $s))))
    (f32.store (i32.add (global.get $pP) (local.get $o))
      (f32.add (local.get $p)
        (f32.div
          (f32.mul (global.get $nss32) (local.get $m))
          (f32.add (f32.div (f32.sqrt (local.get $s)) (global.get $bc2s32)) (global.get $eps32))))))

  ;; One Adam step over n float32 elements, in place. Returns how many 4-lane vectors took the
  ;; scalar path because of a possible double-rounding lane.
  (func (export "adam_f32")
    (param $pp i32) (param $pg i32) (param $pm i32) (param $pv i32) (param $pvm i32)
    (param $n i32) (param $flags i32)
    (param $sign f32) (param $b1 f32) (param $omb1 f32) (param $b2 f32) (param $omb2 f32)
    (param $eps f32) (param $wd f32) (param $decay f32) (param $bc2s f32) (param $nss f32)
    (result i32)
    (local $o i32) (local $end i32) (local $slow i32)
    (local $l2 i32) (local $ams i32) (local $neg i32) (local $dec i32)
    ;; splatted scalars
    (local $B1 v128) (local $B2 v128) (local $OMB2 v128) (local $EPS v128) (local $DECAY v128)
    (local $BC2S v128) (local $NSS v128) (local $OMB1D v128) (local $WDD v128)
    ;; bit-test constants, kept in locals (V8 rematerialises a v128.const at every use)
    (local $MID v128) (local $ABS v128) (local $TINY v128)
    ;; lane values
    (local $P v128) (local $G v128) (local $M v128) (local $V v128) (local $S v128)
    (local $A v128) (local $C v128) (local $lo v128) (local $hi v128) (local $glo v128)
    (local $ghi v128) (local $xm v128) (local $xv v128) (local $bad v128)

    (global.set $pP (local.get $pp))
    (global.set $pG (local.get $pg))
    (global.set $pM (local.get $pm))
    (global.set $pV (local.get $pv))
    (global.set $pVM (local.get $pvm))
    (local.set $l2 (i32.and (local.get $flags) (i32.const 1)))
    (local.set $ams (i32.and (i32.shr_u (local.get $flags) (i32.const 1)) (i32.const 1)))
    (local.set $neg (f32.lt (local.get $sign) (f32.const 0)))
    (local.set $dec (f32.ne (local.get $decay) (f32.const 1)))
    (global.set $l2 (local.get $l2))
    (global.set $ams (local.get $ams))
    (global.set $sign32 (local.get $sign))
    (global.set $b1_32 (local.get $b1))
    (global.set $omb1_32 (local.get $omb1))
    (global.set $b2_32 (local.get $b2))
    (global.set $omb2_32 (local.get $omb2))
    (global.set $eps32 (local.get $eps))
    (global.set $wd32 (local.get $wd))
    (global.set $decay32 (local.get $decay))
    (global.set $bc2s32 (local.get $bc2s))
    (global.set $nss32 (local.get $nss))

    (local.set $B1 (f32x4.splat (local.get $b1)))
    (local.set $B2 (f32x4.splat (local.get $b2)))
    (local.set $OMB2 (f32x4.splat (local.get $omb2)))
    (local.set $EPS (f32x4.splat (local.get $eps)))
    (local.set $DECAY (f32x4.splat (local.get $decay)))
    (local.set $BC2S (f32x4.splat (local.get $bc2s)))
    (local.set $NSS (f32x4.splat (local.get $nss)))
    (local.set $OMB1D (f64x2.splat (f64.promote_f32 (local.get $omb1))))
    (local.set $WDD (f64x2.splat (f64.promote_f32 (local.get $wd))))
    ;; midpoint test: (low 32 bits of the f64 sum) << 3 == 0x80000000, i.e. its low 29 mantissa
    ;; bits are 1<<28; this is also the least i32, so one min_s merges two tests.
    (local.set $MID (v128.const i32x4 0x80000000 0x80000000 0x80000000 0x80000000))
    ;; tiny test: 0 < |r| <= 2^-126 for a float32 result r, as (|bits| + 0x7fffffff) < 0x80800000
    ;; in signed i32 (|bits| = 0 wraps to the greatest i32; 1..0x800000 map to the least ones).
    (local.set $ABS (v128.const i32x4 0x7fffffff 0x7fffffff 0x7fffffff 0x7fffffff))
    (local.set $TINY (v128.const i32x4 0x80800000 0x80800000 0x80800000 0x80800000))

    (local.set $end (i32.shl (i32.and (local.get $n) (i32.const -4)) (i32.const 2)))
    (block $vdone
      (loop $vloop
        (br_if $vdone (i32.ge_u (local.get $o) (local.get $end)))
        (local.set $bad (v128.const i32x4 0 0 0 0))
        (local.set $P (v128.load (i32.add (local.get $pp) (local.get $o))))
        (local.set $G (v128.load (i32.add (local.get $pg) (local.get $o))))
        (if (local.get $neg) (then (local.set $G (f32x4.neg (local.get $G)))))

        (if (local.get $l2)
          (then
            ;; g = fma(p, wd, g)
            (local.set $lo
              (f64x2.add
                (f64x2.mul (f64x2.promote_low_f32x4 (local.get $P)) (local.get $WDD))
                (f64x2.promote_low_f32x4 (local.get $G))))
            (local.set $hi
              (f64x2.add
                (f64x2.mul
                  (f64x2.promote_low_f32x4
                    (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                      (local.get $P) (local.get $P)))
                  (local.get $WDD))
                (f64x2.promote_low_f32x4
                  (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                    (local.get $G) (local.get $G)))))
            (local.set $G
              (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
                (f32x4.demote_f64x2_zero (local.get $lo))
                (f32x4.demote_f64x2_zero (local.get $hi))))
            (local.set $bad
              (v128.or
                (i32x4.eq
                  (i32x4.shl
                    (i8x16.shuffle 0 1 2 3 8 9 10 11 16 17 18 19 24 25 26 27
                      (local.get $lo) (local.get $hi))
                    (i32.const 3))
                  (local.get $MID))
                (i32x4.lt_s
                  (i32x4.add (v128.and (local.get $G) (local.get $ABS)) (local.get $ABS))
                  (local.get $TINY))))))

        (if (local.get $dec)
          (then (local.set $P (f32x4.mul (local.get $P) (local.get $DECAY)))))
        (local.set $glo (f64x2.promote_low_f32x4 (local.get $G)))
        (local.set $ghi
          (f64x2.promote_low_f32x4
            (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
              (local.get $G) (local.get $G))))

        ;; v = fma((1-b2)*g, g, v*b2)
        (local.set $A (f32x4.mul (local.get $OMB2) (local.get $G)))
        (local.set $C
          (f32x4.mul (v128.load (i32.add (local.get $pv) (local.get $o))) (local.get $B2)))
        (local.set $lo
          (f64x2.add (f64x2.mul (f64x2.promote_low_f32x4 (local.get $A)) (local.get $glo))
            (f64x2.promote_low_f32x4 (local.get $C))))
        (local.set $hi
          (f64x2.add
            (f64x2.mul
              (f64x2.promote_low_f32x4
                (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                  (local.get $A) (local.get $A)))
              (local.get $ghi))
            (f64x2.promote_low_f32x4
              (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                (local.get $C) (local.get $C)))))
        (local.set $V
          (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
            (f32x4.demote_f64x2_zero (local.get $lo))
            (f32x4.demote_f64x2_zero (local.get $hi))))
        (local.set $xv
          (i32x4.shl
            (i8x16.shuffle 0 1 2 3 8 9 10 11 16 17 18 19 24 25 26 27 (local.get $lo) (local.get $hi))
            (i32.const 3)))

        ;; m = fma(g, 1-b1, m*b1)
        (local.set $C
          (f32x4.mul (v128.load (i32.add (local.get $pm) (local.get $o))) (local.get $B1)))
        (local.set $lo
          (f64x2.add (f64x2.mul (local.get $glo) (local.get $OMB1D))
            (f64x2.promote_low_f32x4 (local.get $C))))
        (local.set $hi
          (f64x2.add (f64x2.mul (local.get $ghi) (local.get $OMB1D))
            (f64x2.promote_low_f32x4
              (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                (local.get $C) (local.get $C)))))
        (local.set $M
          (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
            (f32x4.demote_f64x2_zero (local.get $lo))
            (f32x4.demote_f64x2_zero (local.get $hi))))
        (local.set $xm
          (i32x4.shl
            (i8x16.shuffle 0 1 2 3 8 9 10 11 16 17 18 19 24 25 26 27 (local.get $lo) (local.get $hi))
            (i32.const 3)))

        ;; A tiny m or v only needs a check where g != 0: with g = 0 both products are 0 and the
        ;; sum is c itself (a decaying v of a parameter with zero gradients stays on this path).
        (local.set $bad
          (v128.or (local.get $bad)
            (v128.or
              (i32x4.eq (i32x4.min_s (local.get $xm) (local.get $xv)) (local.get $MID))
              (v128.andnot
                (i32x4.lt_s
                  (i32x4.min_s
                    (i32x4.add (v128.and (local.get $M) (local.get $ABS)) (local.get $ABS))
                    (i32x4.add (v128.and (local.get $V) (local.get $ABS)) (local.get $ABS)))
                  (local.get $TINY))
                (f32x4.eq (local.get $G) (v128.const f32x4 0 0 0 0))))))

        (if (v128.any_true (local.get $bad))
          (then
            ;; Redo these 4 elements on the scalar path (nothing of them is stored yet).
            (local.set $slow (i32.add (local.get $slow) (i32.const 1)))
            (call $elem32 (local.get $o))
            (call $elem32 (i32.add (local.get $o) (i32.const 4)))
            (call $elem32 (i32.add (local.get $o) (i32.const 8)))
            (call $elem32 (i32.add (local.get $o) (i32.const 12))))
          (else
            (v128.store (i32.add (local.get $pm) (local.get $o)) (local.get $M))
            (v128.store (i32.add (local.get $pv) (local.get $o)) (local.get $V))
            (local.set $S (local.get $V))
            (if (local.get $ams)
              (then
                (local.set $S
                  (f32x4.max (v128.load (i32.add (local.get $pvm) (local.get $o))) (local.get $V)))
                (v128.store (i32.add (local.get $pvm) (local.get $o)) (local.get $S))))
            ;; p = p + (nss*m) / (sqrt(s)/bc2s + eps)
            (v128.store (i32.add (local.get $pp) (local.get $o))
              (f32x4.add (local.get $P)
                (f32x4.div
                  (f32x4.mul (local.get $NSS) (local.get $M))
                  (f32x4.add
                    (f32x4.div (f32x4.sqrt (local.get $S)) (local.get $BC2S))
                    (local.get $EPS)))))))

        (local.set $o (i32.add (local.get $o) (i32.const 16)))
        (br $vloop)))

    ;; the last n mod 4 elements
    (local.set $end (i32.shl (local.get $n) (i32.const 2)))
    (block $tdone
      (loop $tloop
        (br_if $tdone (i32.ge_u (local.get $o) (local.get $end)))
        (call $elem32 (local.get $o))
        (local.set $o (i32.add (local.get $o) (i32.const 4)))
        (br $tloop)))
    (local.get $slow))

  ;; ---------------------------------------------------------------------------------------------
  ;; float64

  ;; fma64(a, b, c) of src/optim/fma.ts, scalar.
  (func $fma64 (param $a f64) (param $b f64) (param $c f64) (result f64)
    (local $p f64) (local $s f64) (local $t f64) (local $ahi f64) (local $alo f64)
    (local $bhi f64) (local $blo f64) (local $pe f64) (local $bb f64) (local $se f64) (local $r f64)
    (local.set $p (f64.mul (local.get $a) (local.get $b)))
    (local.set $s (f64.add (local.get $p) (local.get $c)))
    (local.set $t (f64.mul (f64.const 134217729) (local.get $a)))
    (local.set $ahi (f64.sub (local.get $t) (f64.sub (local.get $t) (local.get $a))))
    (local.set $alo (f64.sub (local.get $a) (local.get $ahi)))
    (local.set $t (f64.mul (f64.const 134217729) (local.get $b)))
    (local.set $bhi (f64.sub (local.get $t) (f64.sub (local.get $t) (local.get $b))))
    (local.set $blo (f64.sub (local.get $b) (local.get $bhi)))
    (local.set $pe
      (f64.add
        (f64.add
          (f64.add
            (f64.sub (f64.mul (local.get $ahi) (local.get $bhi)) (local.get $p))
            (f64.mul (local.get $ahi) (local.get $blo)))
          (f64.mul (local.get $alo) (local.get $bhi)))
        (f64.mul (local.get $alo) (local.get $blo))))
    (local.set $bb (f64.sub (local.get $s) (local.get $p)))
    (local.set $se
      (f64.add
        (f64.sub (local.get $p) (f64.sub (local.get $s) (local.get $bb)))
        (f64.sub (local.get $c) (local.get $bb))))
    (local.set $r (f64.add (local.get $s) (f64.add (local.get $pe) (local.get $se))))
    ;; a zero correction leaves s exact, sign of zero included (-0 + +0 would give +0)
    (local.set $r (select (local.get $s) (local.get $r) (f64.eq (f64.sub (local.get $r) (local.get $s)) (f64.const 0))))
    (select (local.get $r) (local.get $s)
      (f64.eq (f64.sub (local.get $r) (local.get $r)) (f64.const 0))))

  ;; One float64 element at byte offset $o of every array: kernel64 of src/optim/adam.ts.
  (func $elem64 (param $o i32)
    (local $p f64) (local $g f64) (local $m f64) (local $v f64) (local $s f64)
    (local.set $p (f64.load (i32.add (global.get $pP) (local.get $o))))
    (local.set $g
      (f64.mul (global.get $sign64) (f64.load (i32.add (global.get $pG) (local.get $o)))))
    (if (global.get $l2)
      (then (local.set $g (call $fma64 (local.get $p) (global.get $wd64) (local.get $g)))))
    (local.set $p (f64.mul (local.get $p) (global.get $decay64)))
    (local.set $m
      (call $fma64 (local.get $g) (global.get $omb1_64)
        (f64.mul (f64.load (i32.add (global.get $pM) (local.get $o))) (global.get $b1_64))))
    (local.set $v
      (call $fma64 (f64.mul (global.get $omb2_64) (local.get $g)) (local.get $g)
        (f64.mul (f64.load (i32.add (global.get $pV) (local.get $o))) (global.get $b2_64))))
    (f64.store (i32.add (global.get $pM) (local.get $o)) (local.get $m))
    (f64.store (i32.add (global.get $pV) (local.get $o)) (local.get $v))
    (local.set $s (local.get $v))
    (if (global.get $ams)
      (then
        (local.set $s
          (f64.max (f64.load (i32.add (global.get $pVM) (local.get $o))) (local.get $v)))
        (f64.store (i32.add (global.get $pVM) (local.get $o)) (local.get $s))))
    (f64.store (i32.add (global.get $pP) (local.get $o))
      (f64.add (local.get $p)
        (f64.div
          (f64.mul (global.get $nss64) (local.get $m))
          (f64.add (f64.div (f64.sqrt (local.get $s)) (global.get $bc2s64)) (global.get $eps64))))))

  ;; One Adam step over n float64 elements, in place. Returns how many 2-lane vectors took the
  ;; scalar path because a fused multiply-add was not finite.
  (func (export "adam_f64")
    (param $pp i32) (param $pg i32) (param $pm i32) (param $pv i32) (param $pvm i32)
    (param $n i32) (param $flags i32)
    (param $sign f64) (param $b1 f64) (param $omb1 f64) (param $b2 f64) (param $omb2 f64)
    (param $eps f64) (param $wd f64) (param $decay f64) (param $bc2s f64) (param $nss f64)
    (result i32)
    (local $o i32) (local $end i32) (local $slow i32)
    (local $l2 i32) (local $ams i32) (local $neg i32) (local $dec i32)
    (local $B1 v128) (local $B2 v128) (local $OMB1 v128) (local $OMB2 v128)
    (local $EPS v128) (local $WD v128) (local $DECAY v128) (local $BC2S v128) (local $NSS v128)
    (local $SPLIT v128) (local $OMB1HI v128) (local $OMB1LO v128) (local $WDHI v128) (local $WDLO v128)
    (local $P v128) (local $G v128) (local $M v128) (local $V v128) (local $S v128)
    (local $a v128) (local $c v128) (local $p v128) (local $s v128) (local $t v128)
    (local $ahi v128) (local $alo v128) (local $bhi v128) (local $blo v128)
    (local $ghi v128) (local $glo v128) (local $bb v128) (local $r v128) (local $bad v128)

    (global.set $pP (local.get $pp))
    (global.set $pG (local.get $pg))
    (global.set $pM (local.get $pm))
    (global.set $pV (local.get $pv))
    (global.set $pVM (local.get $pvm))
    (local.set $l2 (i32.and (local.get $flags) (i32.const 1)))
    (local.set $ams (i32.and (i32.shr_u (local.get $flags) (i32.const 1)) (i32.const 1)))
    (local.set $neg (f64.lt (local.get $sign) (f64.const 0)))
    (local.set $dec (f64.ne (local.get $decay) (f64.const 1)))
    (global.set $l2 (local.get $l2))
    (global.set $ams (local.get $ams))
    (global.set $sign64 (local.get $sign))
    (global.set $b1_64 (local.get $b1))
    (global.set $omb1_64 (local.get $omb1))
    (global.set $b2_64 (local.get $b2))
    (global.set $omb2_64 (local.get $omb2))
    (global.set $eps64 (local.get $eps))
    (global.set $wd64 (local.get $wd))
    (global.set $decay64 (local.get $decay))
    (global.set $bc2s64 (local.get $bc2s))
    (global.set $nss64 (local.get $nss))

    (local.set $B1 (f64x2.splat (local.get $b1)))
    (local.set $B2 (f64x2.splat (local.get $b2)))
    (local.set $OMB1 (f64x2.splat (local.get $omb1)))
    (local.set $OMB2 (f64x2.splat (local.get $omb2)))
    (local.set $EPS (f64x2.splat (local.get $eps)))
    (local.set $WD (f64x2.splat (local.get $wd)))
    (local.set $DECAY (f64x2.splat (local.get $decay)))
    (local.set $BC2S (f64x2.splat (local.get $bc2s)))
    (local.set $NSS (f64x2.splat (local.get $nss)))
    (local.set $SPLIT (f64x2.splat (f64.const 134217729)))
    ;; Dekker halves of the constant factors, as fma64 computes them on every call
    (local.set $t (f64x2.mul (local.get $SPLIT) (local.get $OMB1)))
    (local.set $OMB1HI (f64x2.sub (local.get $t) (f64x2.sub (local.get $t) (local.get $OMB1))))
    (local.set $OMB1LO (f64x2.sub (local.get $OMB1) (local.get $OMB1HI)))
    (local.set $t (f64x2.mul (local.get $SPLIT) (local.get $WD)))
    (local.set $WDHI (f64x2.sub (local.get $t) (f64x2.sub (local.get $t) (local.get $WD))))
    (local.set $WDLO (f64x2.sub (local.get $WD) (local.get $WDHI)))

    (local.set $end (i32.shl (i32.and (local.get $n) (i32.const -2)) (i32.const 3)))
    (block $vdone
      (loop $vloop
        (br_if $vdone (i32.ge_u (local.get $o) (local.get $end)))
        (local.set $bad (v128.const i64x2 0 0))
        (local.set $P (v128.load (i32.add (local.get $pp) (local.get $o))))
        (local.set $G (v128.load (i32.add (local.get $pg) (local.get $o))))
        (if (local.get $neg) (then (local.set $G (f64x2.neg (local.get $G)))))

        (if (local.get $l2)
          (then
            ;; g = fma64(p, wd, g)
            (local.set $p (f64x2.mul (local.get $P) (local.get $WD)))
            (local.set $s (f64x2.add (local.get $p) (local.get $G)))
            (local.set $t (f64x2.mul (local.get $SPLIT) (local.get $P)))
            (local.set $ahi (f64x2.sub (local.get $t) (f64x2.sub (local.get $t) (local.get $P))))
            (local.set $alo (f64x2.sub (local.get $P) (local.get $ahi)))
            (local.set $bb (f64x2.sub (local.get $s) (local.get $p)))
            (local.set $r
              (f64x2.add (local.get $s)
                (f64x2.add
                  (f64x2.add
                    (f64x2.add
                      (f64x2.add
                        (f64x2.sub (f64x2.mul (local.get $ahi) (local.get $WDHI)) (local.get $p))
                        (f64x2.mul (local.get $ahi) (local.get $WDLO)))
                      (f64x2.mul (local.get $alo) (local.get $WDHI)))
                    (f64x2.mul (local.get $alo) (local.get $WDLO)))
                  (f64x2.add
                    (f64x2.sub (local.get $p) (f64x2.sub (local.get $s) (local.get $bb)))
                    (f64x2.sub (local.get $G) (local.get $bb))))))
            (local.set $r (v128.bitselect (local.get $s) (local.get $r) (f64x2.eq (f64x2.sub (local.get $r) (local.get $s)) (v128.const f64x2 0 0))))
            ;; r - r is +0 (all bits clear) for a finite r, NaN otherwise
            (local.set $bad (f64x2.sub (local.get $r) (local.get $r)))
            (local.set $G (local.get $r))))

        (if (local.get $dec)
          (then (local.set $P (f64x2.mul (local.get $P) (local.get $DECAY)))))
        ;; Dekker halves of g (a factor of both remaining products)
        (local.set $t (f64x2.mul (local.get $SPLIT) (local.get $G)))
        (local.set $ghi (f64x2.sub (local.get $t) (f64x2.sub (local.get $t) (local.get $G))))
        (local.set $glo (f64x2.sub (local.get $G) (local.get $ghi)))

        ;; m = fma64(g, 1-b1, m*b1): exp_avg.mul_(b1).add_(g, alpha=1-b1)
        (local.set $c
          (f64x2.mul (v128.load (i32.add (local.get $pm) (local.get $o))) (local.get $B1)))
        (local.set $p (f64x2.mul (local.get $G) (local.get $OMB1)))
        (local.set $s (f64x2.add (local.get $p) (local.get $c)))
        (local.set $bb (f64x2.sub (local.get $s) (local.get $p)))
        (local.set $r
          (f64x2.add (local.get $s)
            (f64x2.add
              (f64x2.add
                (f64x2.add
                  (f64x2.add
                    (f64x2.sub (f64x2.mul (local.get $ghi) (local.get $OMB1HI)) (local.get $p))
                    (f64x2.mul (local.get $ghi) (local.get $OMB1LO)))
                  (f64x2.mul (local.get $glo) (local.get $OMB1HI)))
                (f64x2.mul (local.get $glo) (local.get $OMB1LO)))
              (f64x2.add
                (f64x2.sub (local.get $p) (f64x2.sub (local.get $s) (local.get $bb)))
                (f64x2.sub (local.get $c) (local.get $bb))))))
        (local.set $r (v128.bitselect (local.get $s) (local.get $r) (f64x2.eq (f64x2.sub (local.get $r) (local.get $s)) (v128.const f64x2 0 0))))
        (local.set $M (local.get $r))
        (local.set $bad (v128.or (local.get $bad) (f64x2.sub (local.get $r) (local.get $r))))

        ;; v = fma64((1-b2)*g, g, v*b2)
        (local.set $a (f64x2.mul (local.get $OMB2) (local.get $G)))
        (local.set $c
          (f64x2.mul (v128.load (i32.add (local.get $pv) (local.get $o))) (local.get $B2)))
        (local.set $p (f64x2.mul (local.get $a) (local.get $G)))
        (local.set $s (f64x2.add (local.get $p) (local.get $c)))
        (local.set $t (f64x2.mul (local.get $SPLIT) (local.get $a)))
        (local.set $ahi (f64x2.sub (local.get $t) (f64x2.sub (local.get $t) (local.get $a))))
        (local.set $alo (f64x2.sub (local.get $a) (local.get $ahi)))
        (local.set $bb (f64x2.sub (local.get $s) (local.get $p)))
        (local.set $r
          (f64x2.add (local.get $s)
            (f64x2.add
              (f64x2.add
                (f64x2.add
                  (f64x2.add
                    (f64x2.sub (f64x2.mul (local.get $ahi) (local.get $ghi)) (local.get $p))
                    (f64x2.mul (local.get $ahi) (local.get $glo)))
                  (f64x2.mul (local.get $alo) (local.get $ghi)))
                (f64x2.mul (local.get $alo) (local.get $glo)))
              (f64x2.add
                (f64x2.sub (local.get $p) (f64x2.sub (local.get $s) (local.get $bb)))
                (f64x2.sub (local.get $c) (local.get $bb))))))
        (local.set $r (v128.bitselect (local.get $s) (local.get $r) (f64x2.eq (f64x2.sub (local.get $r) (local.get $s)) (v128.const f64x2 0 0))))
        (local.set $V (local.get $r))
        (local.set $bad (v128.or (local.get $bad) (f64x2.sub (local.get $r) (local.get $r))))

        (if (v128.any_true (local.get $bad))
          (then
            ;; Redo these 2 elements on the scalar path (nothing of them is stored yet).
            (local.set $slow (i32.add (local.get $slow) (i32.const 1)))
            (call $elem64 (local.get $o))
            (call $elem64 (i32.add (local.get $o) (i32.const 8))))
          (else
            (v128.store (i32.add (local.get $pm) (local.get $o)) (local.get $M))
            (v128.store (i32.add (local.get $pv) (local.get $o)) (local.get $V))
            (local.set $S (local.get $V))
            (if (local.get $ams)
              (then
                (local.set $S
                  (f64x2.max (v128.load (i32.add (local.get $pvm) (local.get $o))) (local.get $V)))
                (v128.store (i32.add (local.get $pvm) (local.get $o)) (local.get $S))))
            (v128.store (i32.add (local.get $pp) (local.get $o))
              (f64x2.add (local.get $P)
                (f64x2.div
                  (f64x2.mul (local.get $NSS) (local.get $M))
                  (f64x2.add
                    (f64x2.div (f64x2.sqrt (local.get $S)) (local.get $BC2S))
                    (local.get $EPS)))))))

        (local.set $o (i32.add (local.get $o) (i32.const 16)))
        (br $vloop)))

    (if (i32.and (local.get $n) (i32.const 1))
      (then (call $elem64 (local.get $o))))
    (local.get $slow))

  ;; ---------------------------------------------------------------------------------------------
  ;; Relaxed SIMD: called only where fma_probe showed relaxed_madd fused (see the header).

  ;; adam_f32 with f32x4.relaxed_madd as every fused multiply-add. Returns 0 (no vector takes the
  ;; scalar path; the n mod 4 last elements do, as wasm has no scalar fused multiply-add).
  (func (export "adam_f32_fma")
    (param $pp i32) (param $pg i32) (param $pm i32) (param $pv i32) (param $pvm i32)
    (param $n i32) (param $flags i32)
    (param $sign f32) (param $b1 f32) (param $omb1 f32) (param $b2 f32) (param $omb2 f32)
    (param $eps f32) (param $wd f32) (param $decay f32) (param $bc2s f32) (param $nss f32)
    (result i32)
    (local $o i32) (local $end i32)
    (local $l2 i32) (local $ams i32) (local $neg i32) (local $dec i32)
    (local $B1 v128) (local $OMB1 v128) (local $B2 v128) (local $OMB2 v128) (local $EPS v128)
    (local $WD v128) (local $DECAY v128) (local $RBC2S v128) (local $NSS v128)
    (local $P v128) (local $G v128) (local $M v128) (local $V v128) (local $S v128) (local $X v128)

    (global.set $pP (local.get $pp))
    (global.set $pG (local.get $pg))
    (global.set $pM (local.get $pm))
    (global.set $pV (local.get $pv))
    (global.set $pVM (local.get $pvm))
    (local.set $l2 (i32.and (local.get $flags) (i32.const 1)))
    (local.set $ams (i32.and (i32.shr_u (local.get $flags) (i32.const 1)) (i32.const 1)))
    (local.set $neg (f32.lt (local.get $sign) (f32.const 0)))
    (local.set $dec (f32.ne (local.get $decay) (f32.const 1)))
    (global.set $l2 (local.get $l2))
    (global.set $ams (local.get $ams))
    (global.set $sign32 (local.get $sign))
    (global.set $b1_32 (local.get $b1))
    (global.set $omb1_32 (local.get $omb1))
    (global.set $b2_32 (local.get $b2))
    (global.set $omb2_32 (local.get $omb2))
    (global.set $eps32 (local.get $eps))
    (global.set $wd32 (local.get $wd))
    (global.set $decay32 (local.get $decay))
    (global.set $bc2s32 (local.get $bc2s))
    (global.set $nss32 (local.get $nss))

    (local.set $B1 (f32x4.splat (local.get $b1)))
    (local.set $OMB1 (f32x4.splat (local.get $omb1)))
    (local.set $B2 (f32x4.splat (local.get $b2)))
    (local.set $OMB2 (f32x4.splat (local.get $omb2)))
    (local.set $EPS (f32x4.splat (local.get $eps)))
    (local.set $WD (f32x4.splat (local.get $wd)))
    (local.set $DECAY (f32x4.splat (local.get $decay)))
    (local.set $RBC2S (f64x2.splat (f64.div (f64.const 1) (f64.promote_f32 (local.get $bc2s)))))
    (local.set $NSS (f32x4.splat (local.get $nss)))

    (local.set $end (i32.shl (i32.and (local.get $n) (i32.const -4)) (i32.const 2)))
    (block $vdone
      (loop $vloop
        (br_if $vdone (i32.ge_u (local.get $o) (local.get $end)))
        (local.set $P (v128.load (i32.add (local.get $pp) (local.get $o))))
        (local.set $G (v128.load (i32.add (local.get $pg) (local.get $o))))
        (if (local.get $neg) (then (local.set $G (f32x4.neg (local.get $G)))))
        ;; g = fma(p, wd, g): grad.add(param, alpha=wd)
        (if (local.get $l2)
          (then (local.set $G (f32x4.relaxed_madd (local.get $P) (local.get $WD) (local.get $G)))))
        (if (local.get $dec)
          (then (local.set $P (f32x4.mul (local.get $P) (local.get $DECAY)))))
        ;; m = fma(g, 1-b1, m*b1): exp_avg.mul_(b1).add_(g, alpha=1-b1)
        (local.set $M
          (f32x4.relaxed_madd (local.get $G) (local.get $OMB1)
            (f32x4.mul (v128.load (i32.add (local.get $pm) (local.get $o))) (local.get $B1))))
        ;; v = fma((1-b2)*g, g, v*b2): exp_avg_sq.mul_(b2).addcmul_(g, g, value=1-b2)
        (local.set $V
          (f32x4.relaxed_madd (f32x4.mul (local.get $OMB2) (local.get $G)) (local.get $G)
            (f32x4.mul (v128.load (i32.add (local.get $pv) (local.get $o))) (local.get $B2))))
        (v128.store (i32.add (local.get $pm) (local.get $o)) (local.get $M))
        (v128.store (i32.add (local.get $pv) (local.get $o)) (local.get $V))
        (local.set $S (local.get $V))
        (if (local.get $ams)
          (then
            (local.set $S
              (f32x4.max (v128.load (i32.add (local.get $pvm) (local.get $o))) (local.get $V)))
            (v128.store (i32.add (local.get $pvm) (local.get $o)) (local.get $S))))
        (local.set $X (f32x4.sqrt (local.get $S)))
        ;; denom = (sqrt(s) / bc2s).add_(eps), the division as f64 products with 1/bc2s (header)
        (local.set $X
          (f32x4.add
            (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
              (f32x4.demote_f64x2_zero
                (f64x2.mul (f64x2.promote_low_f32x4 (local.get $X)) (local.get $RBC2S)))
              (f32x4.demote_f64x2_zero
                (f64x2.mul
                  (f64x2.promote_low_f32x4
                    (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15
                      (local.get $X) (local.get $X)))
                  (local.get $RBC2S))))
            (local.get $EPS)))
        ;; p = p + (nss*m) / denom: param.addcdiv_(exp_avg, denom, value=-step_size)
        (v128.store (i32.add (local.get $pp) (local.get $o))
          (f32x4.add (local.get $P)
            (f32x4.div (f32x4.mul (local.get $NSS) (local.get $M)) (local.get $X))))
        (local.set $o (i32.add (local.get $o) (i32.const 16)))
        (br $vloop)))

    ;; the last n mod 4 elements (wasm has no scalar fused multiply-add)
    (local.set $end (i32.shl (local.get $n) (i32.const 2)))
    (block $tdone
      (loop $tloop
        (br_if $tdone (i32.ge_u (local.get $o) (local.get $end)))
        (call $elem32 (local.get $o))
        (local.set $o (i32.add (local.get $o) (i32.const 4)))
        (br $tloop)))
    (i32.const 0))

  ;; adam_f64 with the product error of each fma64 as one fused relaxed_madd: a*b - RN(a*b) =
  ;; fma(a, b, -RN(a*b)), exact, as Dekker's product error in fma64 is, wherever Dekker's algorithm
  ;; is exact: no overflow in the split or the partial products and e_a + e_b >= -970 (Boldo,
  ;; "Pitfalls of a full floating-point proof", 2006). The rest (TwoSum, s + (pe + se), the zero
  ;; and non-finite rules) is fma64's, op for op. The vector path keeps every factor far inside
  ;; that: g (and p, for L2) in [2^-400, 2^400) or 0 (then both error terms are zeros, whose sign
  ;; fma64's zero rule makes irrelevant), 1-b1 and 1-b2 in [2^-53, 1] and wd in [2^-400, 2^400)
  ;; (kernel.ts checks), so e_a + e_b >= -854 and |a*b| < 2^801. Vectors with another lane, or a
  ;; non-finite corrected sum, are redone by the scalar path. Returns how many.
  (func (export "adam_f64_fma")
    (param $pp i32) (param $pg i32) (param $pm i32) (param $pv i32) (param $pvm i32)
    (param $n i32) (param $flags i32)
    (param $sign f64) (param $b1 f64) (param $omb1 f64) (param $b2 f64) (param $omb2 f64)
    (param $eps f64) (param $wd f64) (param $decay f64) (param $bc2s f64) (param $nss f64)
    (result i32)
    (local $o i32) (local $end i32) (local $slow i32)
    (local $l2 i32) (local $ams i32) (local $neg i32) (local $dec i32)
    (local $B1 v128) (local $B2 v128) (local $OMB1 v128) (local $OMB2 v128)
    (local $EPS v128) (local $WD v128) (local $DECAY v128) (local $BC2S v128) (local $NSS v128)
    (local $LO v128) (local $HI v128) (local $ZERO v128)
    (local $P v128) (local $G v128) (local $M v128) (local $V v128) (local $S v128)
    (local $a v128) (local $c v128) (local $p v128) (local $s v128) (local $bb v128) (local $r v128)
    (local $bad v128)

    (global.set $pP (local.get $pp))
    (global.set $pG (local.get $pg))
    (global.set $pM (local.get $pm))
    (global.set $pV (local.get $pv))
    (global.set $pVM (local.get $pvm))
    (local.set $l2 (i32.and (local.get $flags) (i32.const 1)))
    (local.set $ams (i32.and (i32.shr_u (local.get $flags) (i32.const 1)) (i32.const 1)))
    (local.set $neg (f64.lt (local.get $sign) (f64.const 0)))
    (local.set $dec (f64.ne (local.get $decay) (f64.const 1)))
    (global.set $l2 (local.get $l2))
    (global.set $ams (local.get $ams))
    (global.set $sign64 (local.get $sign))
    (global.set $b1_64 (local.get $b1))
    (global.set $omb1_64 (local.get $omb1))
    (global.set $b2_64 (local.get $b2))
    (global.set $omb2_64 (local.get $omb2))
    (global.set $eps64 (local.get $eps))
    (global.set $wd64 (local.get $wd))
    (global.set $decay64 (local.get $decay))
    (global.set $bc2s64 (local.get $bc2s))
    (global.set $nss64 (local.get $nss))

    (local.set $B1 (f64x2.splat (local.get $b1)))
    (local.set $B2 (f64x2.splat (local.get $b2)))
    (local.set $OMB1 (f64x2.splat (local.get $omb1)))
    (local.set $OMB2 (f64x2.splat (local.get $omb2)))
    (local.set $EPS (f64x2.splat (local.get $eps)))
    (local.set $WD (f64x2.splat (local.get $wd)))
    (local.set $DECAY (f64x2.splat (local.get $decay)))
    (local.set $BC2S (f64x2.splat (local.get $bc2s)))
    (local.set $NSS (f64x2.splat (local.get $nss)))
    (local.set $LO (v128.const f64x2 0x1p-400 0x1p-400))
    (local.set $HI (v128.const f64x2 0x1p400 0x1p400))
    (local.set $ZERO (v128.const f64x2 0 0))

    (local.set $end (i32.shl (i32.and (local.get $n) (i32.const -2)) (i32.const 3)))
    (block $vdone
      (loop $vloop
        (br_if $vdone (i32.ge_u (local.get $o) (local.get $end)))
        (local.set $bad (local.get $ZERO))
        (local.set $P (v128.load (i32.add (local.get $pp) (local.get $o))))
        (local.set $G (v128.load (i32.add (local.get $pg) (local.get $o))))
        (if (local.get $neg) (then (local.set $G (f64x2.neg (local.get $G)))))

        (if (local.get $l2)
          (then
            ;; g = fma64(p, wd, g): grad.add(param, alpha=wd); p in range or 0
            (local.set $a (f64x2.abs (local.get $P)))
            (local.set $bad
              (v128.andnot
                (v128.not
                  (v128.and (f64x2.ge (local.get $a) (local.get $LO))
                    (f64x2.lt (local.get $a) (local.get $HI))))
                (f64x2.eq (local.get $P) (local.get $ZERO))))
            (local.set $p (f64x2.mul (local.get $P) (local.get $WD)))
            (local.set $s (f64x2.add (local.get $p) (local.get $G)))
            (local.set $bb (f64x2.sub (local.get $s) (local.get $p)))
            (local.set $r
              (f64x2.add (local.get $s)
                (f64x2.add
                  (f64x2.relaxed_madd (local.get $P) (local.get $WD) (f64x2.neg (local.get $p)))
                  (f64x2.add
                    (f64x2.sub (local.get $p) (f64x2.sub (local.get $s) (local.get $bb)))
                    (f64x2.sub (local.get $G) (local.get $bb))))))
            ;; r = s: keep s (its sign of zero), as fma64 does; r - r is +0 unless r is not finite
            (local.set $r (v128.bitselect (local.get $s) (local.get $r) (f64x2.eq (local.get $r) (local.get $s))))
            (local.set $bad (v128.or (local.get $bad) (f64x2.sub (local.get $r) (local.get $r))))
            (local.set $G (local.get $r))))

        (if (local.get $dec)
          (then (local.set $P (f64x2.mul (local.get $P) (local.get $DECAY)))))
        ;; g in range or 0 (NaN and infinities fail both tests)
        (local.set $a (f64x2.abs (local.get $G)))
        (local.set $bad
          (v128.or (local.get $bad)
            (v128.andnot
              (v128.not
                (v128.and (f64x2.ge (local.get $a) (local.get $LO))
                  (f64x2.lt (local.get $a) (local.get $HI))))
              (f64x2.eq (local.get $G) (local.get $ZERO)))))

        ;; m = fma64(g, 1-b1, m*b1): exp_avg.mul_(b1).add_(g, alpha=1-b1)
        (local.set $c
          (f64x2.mul (v128.load (i32.add (local.get $pm) (local.get $o))) (local.get $B1)))
        (local.set $p (f64x2.mul (local.get $G) (local.get $OMB1)))
        (local.set $s (f64x2.add (local.get $p) (local.get $c)))
        (local.set $bb (f64x2.sub (local.get $s) (local.get $p)))
        (local.set $r
          (f64x2.add (local.get $s)
            (f64x2.add
              (f64x2.relaxed_madd (local.get $G) (local.get $OMB1) (f64x2.neg (local.get $p)))
              (f64x2.add
                (f64x2.sub (local.get $p) (f64x2.sub (local.get $s) (local.get $bb)))
                (f64x2.sub (local.get $c) (local.get $bb))))))
        (local.set $M (v128.bitselect (local.get $s) (local.get $r) (f64x2.eq (local.get $r) (local.get $s))))
        (local.set $bad (v128.or (local.get $bad) (f64x2.sub (local.get $M) (local.get $M))))

        ;; v = fma64((1-b2)*g, g, v*b2): exp_avg_sq.mul_(b2).addcmul_(g, g, value=1-b2)
        (local.set $a (f64x2.mul (local.get $OMB2) (local.get $G)))
        (local.set $c
          (f64x2.mul (v128.load (i32.add (local.get $pv) (local.get $o))) (local.get $B2)))
        (local.set $p (f64x2.mul (local.get $a) (local.get $G)))
        (local.set $s (f64x2.add (local.get $p) (local.get $c)))
        (local.set $bb (f64x2.sub (local.get $s) (local.get $p)))
        (local.set $r
          (f64x2.add (local.get $s)
            (f64x2.add
              (f64x2.relaxed_madd (local.get $a) (local.get $G) (f64x2.neg (local.get $p)))
              (f64x2.add
                (f64x2.sub (local.get $p) (f64x2.sub (local.get $s) (local.get $bb)))
                (f64x2.sub (local.get $c) (local.get $bb))))))
        (local.set $V (v128.bitselect (local.get $s) (local.get $r) (f64x2.eq (local.get $r) (local.get $s))))
        (local.set $bad (v128.or (local.get $bad) (f64x2.sub (local.get $V) (local.get $V))))

        (if (v128.any_true (local.get $bad))
          (then
            ;; Redo these 2 elements on the scalar path (nothing of them is stored yet).
            (local.set $slow (i32.add (local.get $slow) (i32.const 1)))
            (call $elem64 (local.get $o))
            (call $elem64 (i32.add (local.get $o) (i32.const 8))))
          (else
            (v128.store (i32.add (local.get $pm) (local.get $o)) (local.get $M))
            (v128.store (i32.add (local.get $pv) (local.get $o)) (local.get $V))
            (local.set $S (local.get $V))
            (if (local.get $ams)
              (then
                (local.set $S
                  (f64x2.max (v128.load (i32.add (local.get $pvm) (local.get $o))) (local.get $V)))
                (v128.store (i32.add (local.get $pvm) (local.get $o)) (local.get $S))))
            (v128.store (i32.add (local.get $pp) (local.get $o))
              (f64x2.add (local.get $P)
                (f64x2.div
                  (f64x2.mul (local.get $NSS) (local.get $M))
                  (f64x2.add
                    (f64x2.div (f64x2.sqrt (local.get $S)) (local.get $BC2S))
                    (local.get $EPS)))))))

        (local.set $o (i32.add (local.get $o) (i32.const 16)))
        (br $vloop)))

    (if (i32.and (local.get $n) (i32.const 1))
      (then (call $elem64 (local.get $o))))
    (local.get $slow))

  ;; The start-up probe: relaxed_madd(a, b, c) on one f32x4 and two f64x2 triples in memory at
  ;; $p: a, b, c, result at $p+0/16/32/48 (f32x4), $p+64/80/96/112 and $p+128/144/160/176 (f64x2).
  ;; kernel.ts fills in cases where fused and unfused results differ and checks the results.
  (func (export "fma_probe") (param $p i32)
    (v128.store offset=48 (local.get $p)
      (f32x4.relaxed_madd (v128.load (local.get $p)) (v128.load offset=16 (local.get $p))
        (v128.load offset=32 (local.get $p))))
    (v128.store offset=112 (local.get $p)
      (f64x2.relaxed_madd (v128.load offset=64 (local.get $p)) (v128.load offset=80 (local.get $p))
        (v128.load offset=96 (local.get $p))))
    (v128.store offset=176 (local.get $p)
      (f64x2.relaxed_madd (v128.load offset=128 (local.get $p)) (v128.load offset=144 (local.get $p))
        (v128.load offset=160 (local.get $p)))))

  ;; ---------------------------------------------------------------------------------------------
  ;; Finiteness scans: the index of the first element whose exponent bits are all ones (NaN or
  ;; +-infinity) among $n elements at byte offset $p, or -1. Four vectors a round while they are
  ;; all finite; the vector that holds one is searched lane by lane.

  (func (export "first_nonfinite_f32") (param $p i32) (param $n i32) (result i32)
    (local $i i32) (local $mask v128) (local $bad v128)
    (local.set $mask (v128.const i32x4 0x7f800000 0x7f800000 0x7f800000 0x7f800000))
    (block $tail
      (loop $quad
        (br_if $tail (i32.gt_u (i32.add (local.get $i) (i32.const 16)) (local.get $n)))
        (local.set $bad
          (v128.or
            (v128.or
              (i32x4.eq (v128.and (v128.load (i32.add (local.get $p) (i32.shl (local.get $i) (i32.const 2)))) (local.get $mask)) (local.get $mask))
              (i32x4.eq (v128.and (v128.load offset=16 (i32.add (local.get $p) (i32.shl (local.get $i) (i32.const 2)))) (local.get $mask)) (local.get $mask)))
            (v128.or
              (i32x4.eq (v128.and (v128.load offset=32 (i32.add (local.get $p) (i32.shl (local.get $i) (i32.const 2)))) (local.get $mask)) (local.get $mask))
              (i32x4.eq (v128.and (v128.load offset=48 (i32.add (local.get $p) (i32.shl (local.get $i) (i32.const 2)))) (local.get $mask)) (local.get $mask)))))
        (br_if $tail (v128.any_true (local.get $bad)))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $quad)))
    (block $none
      (loop $scalar
        (br_if $none (i32.ge_u (local.get $i) (local.get $n)))
        (if (i32.eq (i32.and (i32.load (i32.add (local.get $p) (i32.shl (local.get $i) (i32.const 2)))) (i32.const 0x7f800000)) (i32.const 0x7f800000))
          (then (return (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $scalar)))
    (i32.const -1))

  (func (export "first_nonfinite_f64") (param $p i32) (param $n i32) (result i32)
    (local $i i32) (local $mask v128) (local $bad v128)
    (local.set $mask (v128.const i64x2 0x7ff0000000000000 0x7ff0000000000000))
    (block $tail
      (loop $quad
        (br_if $tail (i32.gt_u (i32.add (local.get $i) (i32.const 8)) (local.get $n)))
        (local.set $bad
          (v128.or
            (v128.or
              (i64x2.eq (v128.and (v128.load (i32.add (local.get $p) (i32.shl (local.get $i) (i32.const 3)))) (local.get $mask)) (local.get $mask))
              (i64x2.eq (v128.and (v128.load offset=16 (i32.add (local.get $p) (i32.shl (local.get $i) (i32.const 3)))) (local.get $mask)) (local.get $mask)))
            (v128.or
              (i64x2.eq (v128.and (v128.load offset=32 (i32.add (local.get $p) (i32.shl (local.get $i) (i32.const 3)))) (local.get $mask)) (local.get $mask))
              (i64x2.eq (v128.and (v128.load offset=48 (i32.add (local.get $p) (i32.shl (local.get $i) (i32.const 3)))) (local.get $mask)) (local.get $mask)))))
        (br_if $tail (v128.any_true (local.get $bad)))
        (local.set $i (i32.add (local.get $i) (i32.const 8)))
        (br $quad)))
    (block $none
      (loop $scalar
        (br_if $none (i32.ge_u (local.get $i) (local.get $n)))
        (if (i64.eq (i64.and (i64.load (i32.add (local.get $p) (i32.shl (local.get $i) (i32.const 3)))) (i64.const 0x7ff0000000000000)) (i64.const 0x7ff0000000000000))
          (then (return (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $scalar)))
    (i32.const -1))
)
