package hashiflex

import chisel3._
import chisel3.util._
import chisel3.experimental.hierarchy.Definition

import scala.collection.mutable

/** The generator's view of one layer: what it builds and the figures it reports in hw_params.json. */
final case class LayerHw(name: String, op: String, outWidth: Int, adders: Int, stages: Int, beatsIn: Int,
                         beatsOut: Int, parallelism: Int, registerBits: Int = 0, fifos: (Int, Int) = (0, 0),
                         lineBufferBits: Int = 0, addersUnshared: Int = -1, adderBits: Int = -1,
                         comparators: Int = 0, inputFifos: Seq[Int] = Nil) {
  /** Adders without common-subexpression sharing (the same as `adders` for layers without adder trees). */
  def unshared: Int = if (addersUnshared < 0) adders else addersUnshared
  /** Exact adder bits for adder graphs; otherwise each adder counted at the output width. */
  def bits: Int = if (adderBits < 0) adders * (outWidth + 1) else adderBits
}

object Conv2dLayer {
  /** The line buffer (None for a 1x1 unpadded stride-1 conv, which maps pixels one to one) and the trees.
    * Dense: channel o's tree reads the whole (c, i, j) window. Depthwise: channel o's tree reads only its own
    * k x k taps, at window offset o*k*k.
    */
  def params(s: Conv2dSpec, in: NumFmt, levelsPerStage: Int): (Option[WindowParams], ShiftAddLayerParams) = {
    val k = s.kernel
    val taps = (s.inShape.c / s.groups) * k * k
    val n = s.inShape.c * k * k
    val channels = (0 until s.outShape.c).map { o =>
      (s.weights.slots(o * taps, taps, if (s.depthwise) o * k * k else 0), s.bias(o))
    }
    val win =
      if (s.pointwise) None
      else Some(WindowParams(s.inShape.c, s.inShape.h, s.inShape.w, k, s.stride, s.padding, in.width, s.inPar, s.par))
    // zero padding feeds zeros into the windows: the trees must hold them even when 0 lies outside in_bounds
    val treeIn = if (s.padding.any) s.inBounds.union(Bounds(0, 0)) else s.inBounds
    (win, ShiftAddLayerParams(s.name, n, in, treeIn, channels, s.outFmt, s.outBounds, levelsPerStage, s.par,
      planned = s.adders))
  }
  /** A kxk (or depthwise) convolution: line-buffered windows into `par` lanes of shift-add trees. Line
    * buffers come from `windows`, one Definition per distinct shape.
    */
  def apply(s: Conv2dSpec, in: NumFmt, levelsPerStage: Int, x: DecoupledIO[Vec[UInt]],
            windows: mutable.Map[WindowParams, Definition[WindowGen]]): DecoupledIO[Vec[UInt]] = {
    val (win, pe) = params(s, in, levelsPerStage)
    ShiftAddLayer(pe, win.map(WindowGen(_, x, windows, s"${s.name}_window")).getOrElse(x))
  }
}

object LinearLayer {
  def params(s: LinearSpec, in: NumFmt, levelsPerStage: Int): ShiftAddLayerParams = {
    val n = s.inShape.c
    val channels = (0 until s.outShape.c).map(o => (s.weights.slots(o * n, n), s.bias(o)))
    ShiftAddLayerParams(s.name, n, in, s.inBounds, channels, s.outFmt, s.outBounds, levelsPerStage, planned = s.adders)
  }
}

object Requantize {
  private def sconst(v: BigInt): SInt = v.S(TreePlan.sintWidth(Bounds(v, v)).W)
  /** The software rule, once: y = clamp((x + 2^(s-1)) >> s, lo, hi) for s > 0, x << -s for s < 0. */
  def reference(x: BigInt, s: Int, c: Bounds): BigInt = {
    val y = if (s > 0) (x + (BigInt(1) << (s - 1))) >> s else if (s < 0) x << -s else x
    y.max(c.lo).min(c.hi)
  }
  /** The same in hardware: an arithmetic shift (floor) after adding half, then a clamp; `out` bits of result. */
  def apply(x: SInt, shift: Int, clamp: Bounds, out: NumFmt): UInt = {
    val shifted =
      if (shift > 0) (x +& sconst(BigInt(1) << (shift - 1))) >> shift
      else if (shift < 0) x << -shift
      else x
    val y = Mux(shifted < sconst(clamp.lo), sconst(clamp.lo), Mux(shifted > sconst(clamp.hi), sconst(clamp.hi), shifted))
    y.pad(out.width + 1)(out.width - 1, 0)
  }
  def widen(raw: UInt, f: NumFmt): SInt = if (f.signed) raw.asSInt else raw.zext
}

final case class RequantParams(channels: Int, in: NumFmt, shift: Int, clamp: Bounds, out: NumFmt)

/** Requantizing shift with round-half-up and clamp on every lane of a beat; the clamp implements ReLU/ReLU6.
  * Combinational on the stream (ready/valid pass through).
  */
class Requant(val p: RequantParams) extends Module {
  override def desiredName: String =
    s"Requant_c${p.channels}_i${p.in.width}${if (p.in.signed) "s" else "u"}_sh${p.shift}_lo${p.clamp.lo}_hi${p.clamp.hi}".replace("-", "m")
  val in = IO(Flipped(Decoupled(Vec(p.channels, UInt(p.in.width.W)))))
  val out = IO(Decoupled(Vec(p.channels, UInt(p.out.width.W))))
  import ModuleTable._
  ModuleTable.record(desiredName, "requant", "lanes" -> p.channels, "in_width" -> p.in.width, "shift" -> p.shift,
    "out_width" -> p.out.width)
  in.ready := out.ready
  out.valid := in.valid
  out.bits := VecInit(in.bits.map(raw => Requantize(Requantize.widen(raw, p.in), p.shift, p.clamp, p.out)))
}

object Requant {
  def apply(s: RequantSpec, in: NumFmt, x: DecoupledIO[Vec[UInt]]): DecoupledIO[Vec[UInt]] = {
    val m = Module(new Requant(RequantParams(s.inShape.c * s.par, in, s.shift, s.clamp, s.outFmt))).suggestName(s.name)
    m.in <> x
    m.out
  }
}

final case class AddParams(lanes: Int, a: NumFmt, aShift: Int, b: NumFmt, bShift: Int, shift: Int, clamp: Bounds,
                           out: NumFmt)

/** Residual add: both operands aligned to the finer exponent by left shifts, summed exactly, requantized.
  * Joins two streams: a beat passes when both operands are valid.
  */
class ResidualAdd(val p: AddParams) extends Module {
  override def desiredName: String =
    (s"ResidualAdd_l${p.lanes}_a${p.a.width}${if (p.a.signed) "s" else "u"}x${p.aShift}" +
      s"_b${p.b.width}${if (p.b.signed) "s" else "u"}x${p.bShift}_sh${p.shift}_lo${p.clamp.lo}_hi${p.clamp.hi}").replace("-", "m")
  val a = IO(Flipped(Decoupled(Vec(p.lanes, UInt(p.a.width.W)))))
  val b = IO(Flipped(Decoupled(Vec(p.lanes, UInt(p.b.width.W)))))
  val out = IO(Decoupled(Vec(p.lanes, UInt(p.out.width.W))))
  import ModuleTable._
  ModuleTable.record(desiredName, "residual_add", "lanes" -> p.lanes, "a_width" -> p.a.width, "a_shift" -> p.aShift,
    "b_width" -> p.b.width, "b_shift" -> p.bShift, "shift" -> p.shift, "out_width" -> p.out.width)
  out.valid := a.valid && b.valid
  a.ready := out.ready && b.valid
  b.ready := out.ready && a.valid
  out.bits := VecInit((0 until p.lanes).map { i =>
    val sum = (Requantize.widen(a.bits(i), p.a) << p.aShift) +& (Requantize.widen(b.bits(i), p.b) << p.bShift)
    Requantize(sum, p.shift, p.clamp, p.out)
  })
}

object ResidualAdd {
  def apply(s: AddSpec, a: DecoupledIO[Vec[UInt]], aFmt: NumFmt, b: DecoupledIO[Vec[UInt]], bFmt: NumFmt): DecoupledIO[Vec[UInt]] = {
    val m = Module(new ResidualAdd(AddParams(s.inShape.c * s.par, aFmt, s.srcShift, bFmt, s.skipShift, s.shift, s.clamp, s.outFmt)))
      .suggestName(s.name)
    m.a <> a
    m.b <> b
    m.out
  }
}

/** One stream to `n` consumers: a beat is taken when every consumer takes it. */
class Fork(val n: Int, val lanes: Int, val width: Int) extends Module {
  override def desiredName: String = s"Fork_n${n}_l${lanes}_w$width"
  val in = IO(Flipped(Decoupled(Vec(lanes, UInt(width.W)))))
  val out = IO(Vec(n, Decoupled(Vec(lanes, UInt(width.W)))))
  import ModuleTable._
  ModuleTable.record(desiredName, "fork", "readers" -> n, "lanes" -> lanes, "width" -> width)
  in.ready := out.map(_.ready).reduce(_ && _)
  for (i <- 0 until n) {
    out(i).bits := in.bits
    out(i).valid := in.valid && out.indices.filter(_ != i).map(out(_).ready).foldLeft(true.B)(_ && _)
  }
}

object Fork {
  /** `name`: the tensor forked (the instance is `<name>_fork`). */
  def apply(n: Int, x: DecoupledIO[Vec[UInt]], name: String): Seq[DecoupledIO[Vec[UInt]]] = {
    val m = Module(new Fork(n, x.bits.length, x.bits.head.getWidth)).suggestName(s"${name}_fork")
    m.in <> x
    m.out
  }
}

final case class SumPoolParams(channels: Int, pixels: Int, in: NumFmt, out: NumFmt, par: Int = 1)

/** Global pool as an exact sum of all pixels of an image, per channel; `par` pixels per input beat; one output
  * beat per image.
  */
class SumPool(val p: SumPoolParams) extends Module {
  override def desiredName: String =
    s"SumPool_c${p.channels}_n${p.pixels}_p${p.par}_i${p.in.width}${if (p.in.signed) "s" else "u"}_o${p.out.width}"
  val in = IO(Flipped(Decoupled(Vec(p.par * p.channels, UInt(p.in.width.W)))))
  val out = IO(Decoupled(Vec(p.channels, UInt(p.out.width.W))))
  import ModuleTable._
  ModuleTable.record(desiredName, "sum_pool", "channels" -> p.channels, "pixels" -> p.pixels, "par" -> p.par,
    "in_width" -> p.in.width, "out_width" -> p.out.width)
  private val w = p.out.width + 1
  private val beats = p.pixels / p.par
  private val acc = RegInit(VecInit(Seq.fill(p.channels)(0.S(w.W))))
  private val result = Reg(Vec(p.channels, UInt(p.out.width.W)))
  private val n = RegInit(0.U(Window.bitsFor(beats + 1).W))
  private val full = RegInit(false.B)
  in.ready := !full || out.ready
  when(out.fire) { full := false.B }
  when(in.fire) {
    val last = n === (beats - 1).U
    n := Mux(last, 0.U, n + 1.U)
    for (c <- 0 until p.channels) {
      val xs = (0 until p.par).map(q => Requantize.widen(in.bits(q * p.channels + c), p.in))
      val sum = (xs.foldLeft(acc(c))((s, x) => (s +& x)(w - 1, 0).asSInt))
      acc(c) := Mux(last, 0.S, sum)
      when(last) { result(c) := sum(p.out.width - 1, 0) }
    }
    when(last) { full := true.B }
  }
  out.valid := full
  out.bits := result
}

object SumPool {
  def apply(s: SumPoolSpec, in: NumFmt, x: DecoupledIO[Vec[UInt]]): DecoupledIO[Vec[UInt]] = {
    val m = Module(new SumPool(SumPoolParams(s.inShape.c, s.inShape.pixels, in, s.outFmt, s.inPar))).suggestName(s.name)
    m.in <> x
    m.out
  }
}
