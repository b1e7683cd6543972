package hashiflex

import chisel3._
import chisel3.util._

/** concat (hashiflex/ops/concat.py): channel concatenation of tensors of one height and width, each aligned to
  * the finest exponent by a left shift. Wiring plus a join: a beat passes when every operand has one; operands
  * on paths that hold less than the longest wait in FIFOs (PlanCtx.joinFifos), so the join never deadlocks.
  */
final case class ConcatSpec(c: Common, inputs: Seq[String], shapes: Seq[Shape], fmts: Seq[NumFmt], shifts: Seq[Int])
    extends LayerSpec {
  val op = "concat"
  override def reads: Seq[String] = inputs
  def plan(ctx: PlanCtx): LayerHw = ctx.hw(0, 0, inputFifos = ctx.joinFifos(inputs))
  def build(ctx: BuildCtx, x: DecoupledIO[Vec[UInt]]): DecoupledIO[Vec[UInt]] = {
    val streams = x +: inputs.tail.map(ctx.take)
    val m = Module(new Concat(ConcatParams(par, shapes.map(_.c), fmts, shifts, outFmt))).suggestName(name)
    for (((port, s), depth) <- m.in.zip(streams).zip(ctx.hw.inputFifos))
      port <> Fifo(s, depth)
    m.out
  }
}

object ConcatSpec {
  /** A `concat` record: its operands (src first) are earlier tensors of one height, width and parallelism;
    * the output's channels, exponent (the finest) and bounds (the union of the aligned operands') re-derived. */
  private[hashiflex] def parse(p: LayerParse): ConcatSpec = {
    val insC = p.l.field("inputs")
    val names = insC.arr.map(_.str)
    if (names.length < 2 || names.head != p.src)
      throw DesignError(s"${insC.path}: expected at least two operands in channel order, starting with src \"${p.src}\", found ${names.mkString("[", ", ", "]")}")
    val ts = names.zipWithIndex.map { case (n, i) =>
      val t = p.tensors.getOrElse(n, throw DesignError(s"${insC.path}[$i]: expected \"input\" or an earlier layer's name, found \"$n\""))
      if (t.shape.h != p.input.shape.h || t.shape.w != p.input.shape.w || t.vector != p.input.vector)
        throw DesignError(s"${insC.path}[$i]: expected a tensor of ${p.input.shape.h}x${p.input.shape.w} (like \"${p.src}\"), found ${t.shape} from \"$n\"")
      if (t.par != p.common.par)
        throw DesignError(s"${insC.path}[$i]: expected parallelism ${p.common.par} (the concatenation's; wiring keeps pixels per beat), found ${t.par} from \"$n\"")
      t
    }
    p.expectShape(Shape(ts.map(_.shape.c).sum, p.input.shape.h, p.input.shape.w))
    val e = ts.map(_.exp).min
    p.expectExp(e, "the finest exponent of the operands")
    val shifts = ts.map(_.exp - e)
    val b = ts.zip(shifts).map { case (t, s) => t.bounds << s }.reduce(_ union _)
    if (b != p.common.outBounds)
      throw DesignError(s"${p.l.path}.out_bounds: expected $b (the operands' bounds aligned to exponent $e), found ${p.common.outBounds}")
    ConcatSpec(p.common, names, ts.map(_.shape), ts.map(_.fmt), shifts)
  }
}

final case class ConcatParams(par: Int, channels: Seq[Int], in: Seq[NumFmt], shifts: Seq[Int], out: NumFmt)

/** The join: output pixel q holds operand 0's channels, then operand 1's, ..., each widened and shifted. */
class Concat(val p: ConcatParams) extends Module {
  override def desiredName: String =
    s"Concat_p${p.par}_" + p.channels.indices.map(i =>
      s"c${p.channels(i)}w${p.in(i).width}${if (p.in(i).signed) "s" else "u"}x${p.shifts(i)}").mkString("_") +
      s"_o${p.out.width}"
  val in = IO(MixedVec(p.channels.indices.map(i => Flipped(Decoupled(Vec(p.par * p.channels(i), UInt(p.in(i).width.W)))))))
  val out = IO(Decoupled(Vec(p.par * p.channels.sum, UInt(p.out.width.W))))
  import ModuleTable._
  ModuleTable.record(desiredName, "concat", "par" -> p.par, "channels" -> ints(p.channels),
    "out_width" -> p.out.width)
  private val all = in.map(_.valid).reduce(_ && _)
  out.valid := all
  for ((x, i) <- in.zipWithIndex)
    x.ready := out.ready && in.indices.filter(_ != i).map(in(_).valid).foldLeft(true.B)(_ && _)
  private val total = p.channels.sum
  for (q <- 0 until p.par) {
    var o = 0
    for (i <- p.channels.indices; c <- 0 until p.channels(i)) {
      val v = Requantize.widen(in(i).bits(q * p.channels(i) + c), p.in(i)) << p.shifts(i)
      out.bits(q * total + o) := v.pad(p.out.width + 1)(p.out.width - 1, 0)
      o += 1
    }
  }
}
