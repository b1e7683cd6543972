package hashiflex

import chisel3._
import chisel3.util._

/** The generator's view of one layer: what it builds and the figures it reports in hw_params.json. */
final case class LayerHw(name: String, op: String, outWidth: Int, adders: Int, stages: Int, beatsIn: Int,
                         parallelism: Int = 1)

object Conv2dLayer {
  def params(s: Conv2dSpec, in: NumFmt, levelsPerStage: Int): (WindowParams, ShiftAddLayerParams) = {
    val k = s.kernel
    val n = s.inShape.c * k * k
    val channels = (0 until s.outShape.c).map(o => (Term.fromCodes(s.weights.codes.slice(o * n, (o + 1) * n)), s.bias(o)))
    val win = WindowParams(s.inShape.c, s.inShape.h, s.inShape.w, k, s.stride, s.padding, in.width)
    // zero padding feeds zeros into the windows: the trees must hold them even when 0 lies outside in_bounds
    val treeIn = if (s.padding > 0) s.inBounds.union(Bounds(0, 0)) else s.inBounds
    (win, ShiftAddLayerParams(s.name, n, in, treeIn, channels, s.outFmt, s.outBounds, levelsPerStage))
  }
  /** A kxk convolution: line-buffered windows into a layer of shift-add trees. */
  def apply(s: Conv2dSpec, in: NumFmt, levelsPerStage: Int, x: DecoupledIO[Vec[UInt]]): DecoupledIO[Vec[UInt]] = {
    val (win, pe) = params(s, in, levelsPerStage)
    ShiftAddLayer(pe, WindowGen(win, x))
  }
}

object LinearLayer {
  def params(s: LinearSpec, in: NumFmt, levelsPerStage: Int): ShiftAddLayerParams = {
    val n = s.inShape.c * s.inShape.pixels
    require(s.inShape.pixels == 1, s"layer ${s.name}: a linear layer takes a vector (one beat), found ${s.inShape}")
    val channels = (0 until s.outShape.c).map(o => (Term.fromCodes(s.weights.codes.slice(o * n, (o + 1) * n)), s.bias(o)))
    ShiftAddLayerParams(s.name, n, in, s.inBounds, channels, s.outFmt, s.outBounds, levelsPerStage)
  }
}

final case class RequantParams(channels: Int, in: NumFmt, shift: Int, clamp: Bounds, out: NumFmt)

/** Requantizing shift with round-half-up and clamp: y = clamp((x + 2^(s-1)) >> s, lo, hi); s < 0 shifts left.
  * Combinational on the stream (ready/valid pass through); the clamp implements ReLU/ReLU6.
  */
class Requant(val p: RequantParams) extends Module {
  override def desiredName: String =
    s"Requant_c${p.channels}_i${p.in.width}${if (p.in.signed) "s" else "u"}_sh${p.shift}_lo${p.clamp.lo}_hi${p.clamp.hi}".replace("-", "m")
  val in = IO(Flipped(Decoupled(Vec(p.channels, UInt(p.in.width.W)))))
  val out = IO(Decoupled(Vec(p.channels, UInt(p.out.width.W))))
  in.ready := out.ready
  out.valid := in.valid
  private def sconst(v: BigInt): SInt = v.S(TreePlan.sintWidth(Bounds(v, v)).W)
  out.bits := VecInit(in.bits.map { raw =>
    val x = if (p.in.signed) raw.asSInt else raw.zext
    val shifted =
      if (p.shift > 0) (x +& sconst(BigInt(1) << (p.shift - 1))) >> p.shift
      else if (p.shift < 0) x << -p.shift
      else x
    val y = Mux(shifted < sconst(p.clamp.lo), sconst(p.clamp.lo), Mux(shifted > sconst(p.clamp.hi), sconst(p.clamp.hi), shifted))
    y.pad(p.out.width + 1)(p.out.width - 1, 0)
  })
}

object Requant {
  def apply(s: RequantSpec, in: NumFmt, x: DecoupledIO[Vec[UInt]]): DecoupledIO[Vec[UInt]] = {
    val m = Module(new Requant(RequantParams(s.inShape.c, in, s.shift, s.clamp, s.outFmt)))
    m.in <> x
    m.out
  }
}

final case class SumPoolParams(channels: Int, pixels: Int, in: NumFmt, out: NumFmt)

/** Global pool as an exact sum of all pixels of an image, per channel; one output beat per image. */
class SumPool(val p: SumPoolParams) extends Module {
  override def desiredName: String =
    s"SumPool_c${p.channels}_n${p.pixels}_i${p.in.width}${if (p.in.signed) "s" else "u"}_o${p.out.width}"
  val in = IO(Flipped(Decoupled(Vec(p.channels, UInt(p.in.width.W)))))
  val out = IO(Decoupled(Vec(p.channels, UInt(p.out.width.W))))
  private val w = p.out.width + 1
  private val acc = RegInit(VecInit(Seq.fill(p.channels)(0.S(w.W))))
  private val result = Reg(Vec(p.channels, UInt(p.out.width.W)))
  private val n = RegInit(0.U(log2Ceil(p.pixels + 1).W))
  private val full = RegInit(false.B)
  in.ready := !full || out.ready
  when(out.fire) { full := false.B }
  when(in.fire) {
    val last = n === (p.pixels - 1).U
    n := Mux(last, 0.U, n + 1.U)
    for (c <- 0 until p.channels) {
      val x = if (p.in.signed) in.bits(c).asSInt else in.bits(c).zext
      val sum = (acc(c) +& x)(w - 1, 0).asSInt
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
    val m = Module(new SumPool(SumPoolParams(s.inShape.c, s.inShape.pixels, in, s.outFmt)))
    m.in <> x
    m.out
  }
}
