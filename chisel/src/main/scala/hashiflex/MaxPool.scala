package hashiflex

import chisel3._
import chisel3.util._

/** max_pool2d (hashiflex/ops/max_pool.py): the maximum over k x k windows with stride and padding, a comparator
  * tree per channel and pixel on the line buffer. The border reads the smallest value of the input format, below
  * every input, and every window holds a pixel of the image (checked), so padding never wins: the result is the
  * maximum over the window's pixels, as torch's -inf padding gives. Values, exponent and bounds pass through.
  */
final case class MaxPoolSpec(c: Common, kernel: Int, stride: Int, padding: Padding) extends LayerSpec {
  val op = "max_pool2d"
  override def staged: Boolean = true
  /** The line buffer: windows padded with the input format's smallest value (as a raw bit pattern). */
  def window(in: NumFmt): WindowParams = {
    val low = if (in.lo < 0) in.lo + (BigInt(1) << in.width) else in.lo
    WindowParams(inShape.c, inShape.h, inShape.w, kernel, stride, padding, in.width, inPar, par, padValue = low)
  }
  /** 1x1, stride 1, unpadded: pixels map one to one, no line buffer (as for a pointwise conv). */
  def pointwise: Boolean = kernel == 1 && stride == 1 && !padding.any
  def params(in: NumFmt, levelsPerStage: Int): MaxPoolParams =
    MaxPoolParams(inShape.c, kernel, in, levelsPerStage, par)
  def plan(ctx: PlanCtx): LayerHw = { // out_bounds == in_bounds: checked as it is read (MaxPoolSpec.parse)
    val p = params(ctx.fmt, ctx.levels)
    val w = window(ctx.fmt)
    ctx.hw(0, p.schedule.stages, p.registerBits, lineBuf = if (pointwise) 0 else w.rows * w.width * w.channels * w.bits,
      comparators = p.comparators)
  }
  override def capacityPixels(stages: Int): Int =
    if (pointwise) stages * par else inShape.w * Window.ringRows(kernel, stride, inPar, inShape.w, par, outShape.w) + stages * par
  def build(ctx: BuildCtx, x: DecoupledIO[Vec[UInt]]): DecoupledIO[Vec[UInt]] = {
    val m = Module(new MaxPool(params(ctx.fmt, ctx.levels))).suggestName(name)
    m.in <> (if (pointwise) x else WindowGen(window(ctx.fmt), x, ctx.windows, s"${name}_window"))
    m.out
  }
}

object MaxPoolSpec {
  /** A `max_pool2d` record: kernel, stride and padding range-checked, the output shape, exponent and bounds
    * re-derived (a maximum keeps the input's). */
  private[hashiflex] def parse(p: LayerParse): MaxPoolSpec = {
    val k = p.l.field("kernel").intIn(1, 15)
    val s = p.l.field("stride").intIn(1, 15)
    val padC = p.l.field("padding")
    val pad = Padding.parse(padC)
    val in = p.input.shape
    if (p.input.vector) throw DesignError(s"${p.opPath}: a max_pool2d needs a feature map, but \"${p.src}\" is a vector")
    if (Seq(pad.top, pad.bottom, pad.left, pad.right).max >= k)
      throw DesignError(s"${padC.path}: expected less than the kernel $k on every side (a window of padding alone has no maximum), found $pad")
    if (!pad.fits(in.h, in.w, k))
      throw DesignError(s"${p.l.path}.kernel: expected a kernel that fits the ${in.h}x${in.w} input padded by $pad, found $k")
    // with less than a kernel of padding on every side, every window holds a pixel of the image
    val (oh, ow) = pad.outHW(in.h, in.w, k, s)
    p.expectShape(Shape(in.c, oh, ow))
    p.expectExp(p.input.exp, "a maximum keeps the input exponent")
    p.expectBoundsKept()
    val spec = MaxPoolSpec(p.common, k, s, pad)
    if (spec.pointwise) p.samePar("a 1x1 pool maps pixels one to one")
    spec
  }
}

/** `channels` comparator trees over k x k window elements per pixel, `par` pixels per beat; registers at the
  * levels of [[StageSchedule]] (the adder trees' rule, one comparator level counting as one adder level). */
final case class MaxPoolParams(channels: Int, kernel: Int, in: NumFmt, levelsPerStage: Int, par: Int) {
  val taps: Int = kernel * kernel
  val depth: Int = log2Ceil(taps)
  val schedule: StageSchedule = StageSchedule(depth, levelsPerStage)
  /** Two-input comparators (each with its 2:1 mux) of the whole layer. */
  def comparators: Int = channels * (taps - 1) * par
  /** Values alive after level l (a level pairs neighbours; an odd one passes through). */
  private def alive(level: Int): Int = (taps + (1 << level) - 1) >> level
  def registerBits: Int = schedule.registeredLevels.toSeq.map(alive).sum * in.width * channels * par
}

/** The comparator trees behind a stallable ready/valid pipeline (the ShiftAddLayer scheme). Window elements come
  * in (pixel, channel, row, column) order. */
class MaxPool(val p: MaxPoolParams) extends Module {
  override def desiredName: String =
    s"MaxPool_c${p.channels}_k${p.kernel}_p${p.par}_s${p.schedule.stages}_i${p.in.width}${if (p.in.signed) "s" else "u"}"
  val in = IO(Flipped(Decoupled(Vec(p.par * p.channels * p.taps, UInt(p.in.width.W)))))
  val out = IO(Decoupled(Vec(p.par * p.channels, UInt(p.in.width.W))))
  import ModuleTable._
  ModuleTable.record(desiredName, "max_pool", "channels" -> p.channels, "kernel" -> p.kernel, "par" -> p.par,
    "width" -> p.in.width, "comparators" -> p.comparators, "register_bits" -> p.registerBits)
  private val en = StallablePipeline(p.schedule.stages, in, out)

  private def greater(a: UInt, b: UInt): Bool = if (p.in.signed) a.asSInt > b.asSInt else a > b
  private def reg(xs: Seq[UInt], level: Int): Seq[UInt] =
    if (p.schedule.registeredLevels(level)) xs.map(x => RegEnable(x, 0.U(p.in.width.W), en)) else xs
  for (q <- 0 until p.par; c <- 0 until p.channels) {
    val first = (q * p.channels + c) * p.taps
    var xs: Seq[UInt] = reg((0 until p.taps).map(e => in.bits(first + e)), 0)
    for (level <- 1 to p.depth) {
      xs = reg(xs.grouped(2).map {
        case Seq(a, b) => Mux(greater(b, a), b, a)
        case Seq(a)    => a
      }.toSeq, level)
    }
    out.bits(q * p.channels + c) := xs.head
  }
}
