package hashiflex

import chisel3._
import chisel3.util._

/** channel_select (hashiflex/ops/channel_select.py): output channel j is input channel `channels(j)` (a slice,
  * a chunk or split along channels, ShuffleNet's channel shuffle). Wiring only: the beat's lanes rewired,
  * ready/valid passed through; values, exponent and bounds unchanged.
  */
final case class ChannelSelectSpec(c: Common, channels: IndexedSeq[Int]) extends LayerSpec {
  val op = "channel_select"
  def plan(ctx: PlanCtx): LayerHw = ctx.hw(0, 0) // out_bounds == in_bounds: checked as it is read
  def build(ctx: BuildCtx, x: DecoupledIO[Vec[UInt]]): DecoupledIO[Vec[UInt]] = {
    val m = Module(new ChannelSelect(inShape.c, channels, par, ctx.fmt.width)).suggestName(name)
    m.in <> x
    m.out
  }
}

/** The rewiring, as a module of its own so the layer has an instance named after it (the netlist checks). */
class ChannelSelect(val inChannels: Int, val channels: IndexedSeq[Int], val par: Int, val width: Int) extends Module {
  override def desiredName: String =
    f"ChannelSelect_c${inChannels}_o${channels.length}_p${par}_w${width}_${scala.util.hashing.MurmurHash3.seqHash(channels)}%08x"
  val in = IO(Flipped(Decoupled(Vec(par * inChannels, UInt(width.W)))))
  val out = IO(Decoupled(Vec(par * channels.length, UInt(width.W))))
  import ModuleTable._
  ModuleTable.record(desiredName, "channel_select", "in_channels" -> inChannels, "out_channels" -> channels.length,
    "par" -> par, "width" -> width)
  out.valid := in.valid
  in.ready := out.ready
  for (q <- 0 until par; (ci, o) <- channels.zipWithIndex) out.bits(q * channels.length + o) := in.bits(q * inChannels + ci)
}

object ChannelSelectSpec {
  private[hashiflex] def parse(p: LayerParse): ChannelSelectSpec = {
    val chC = p.l.field("channels")
    val channels = chC.arrOf(p.common.outShape.c).map(_.intIn(0, p.input.shape.c - 1))
    p.expectShape(Shape(channels.length, p.input.shape.h, p.input.shape.w))
    p.expectExp(p.input.exp, "a selection keeps the input exponent")
    p.expectBoundsKept()
    p.samePar("a channel selection is wiring, pixel for pixel")
    ChannelSelectSpec(p.common, channels)
  }
}
