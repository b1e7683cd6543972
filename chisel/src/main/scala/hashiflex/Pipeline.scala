package hashiflex

import chisel3._
import chisel3.util._
import chisel3.experimental.hierarchy.Definition

import scala.collection.mutable

/** The whole hardened network: layers joined by ready/valid streams of pixels (`par` pixels, all channels per
  * beat). A tensor read by several layers goes through a Fork; at a residual add the operand on the shorter path
  * waits in a FIFO deep enough for what the longer path holds (Pipeline.plan), so the join never deadlocks and
  * never stalls the stream.
  */
class Pipeline(val d: DesignSpec) extends Module {
  // with an NPU head the top is an Accelerator around this backbone (Npu.scala)
  override def desiredName: String = if (d.npu.isDefined) s"Backbone_${d.name}" else s"Hashiflex_${d.name}"
  private val hw = Pipeline.plan(d) // validates before any hardware is built
  val in = IO(Flipped(Decoupled(Vec(d.input.par * d.input.shape.c, UInt(d.input.fmt.width.W)))))
  private val last = d.layers.last
  val out = IO(Decoupled(Vec(last.par * last.outShape.c, UInt(last.outFmt.width.W))))

  private val uses = d.consumers
  private val streams = mutable.Map.empty[String, mutable.Queue[DecoupledIO[Vec[UInt]]]]
  private def produce(name: String, s: DecoupledIO[Vec[UInt]]): Unit = {
    val n = uses.getOrElse(name, 0)
    streams(name) = mutable.Queue.from(if (n > 1) Fork(n, s, name) else Seq(s))
  }
  private def take(name: String): DecoupledIO[Vec[UInt]] = streams(name).dequeue()

  private val windows = mutable.HashMap.empty[WindowParams, Definition[WindowGen]]
  produce("input", in)
  for ((layer, h) <- d.layers.zip(hw)) {
    val x = take(layer.src)
    val ctx = new BuildCtx(d, layer, h, windows, take)
    val y = chisel3.experimental.noPrefix(layer.build(ctx, x)) // instances are named after their layers
    produce(layer.name, y)
  }
  out <> take(last.name)
}

/** What a layer's `plan` sees: the design, the figures of the layers before it, and the checks it reports with. */
final class PlanCtx(val d: DesignSpec, val layer: LayerSpec, index: Int, val done: collection.Map[String, LayerHw]) {
  val fmt: NumFmt = d.fmtOf(layer.src)
  /** Adder levels per register stage of this layer's tree: its own `levels_per_stage`, else the design's. */
  def levels: Int = layer.c.levels.getOrElse(d.levelsPerStage)
  /** Lanes of a pixel-for-pixel layer: every channel of every pixel of a beat. */
  def lanes: Int = layer.inShape.c * layer.par
  def expectBounds(b: Bounds, why: String): Unit =
    if (b != layer.outBounds)
      throw DesignError(s"design.layers[$index].out_bounds: expected $b ($why), found ${layer.outBounds} (layer \"${layer.name}\")")
  def requantized(b: Bounds, s: Int, c: Bounds): Bounds =
    Bounds(Requantize.reference(b.lo, s, c), Requantize.reference(b.hi, s, c))
  def hw(adders: Int, stages: Int, regs: Int = 0, fifos: (Int, Int) = (0, 0), lineBuf: Int = 0, unshared: Int = -1,
         bits: Int = -1, comparators: Int = 0, inputFifos: Seq[Int] = Nil): LayerHw =
    LayerHw(layer.name, layer.op, layer.outFmt.width, adders, stages, layer.beatsIn, layer.beatsOut, layer.par, regs,
      fifos, lineBuf, unshared, bits, comparators, inputFifos)
  /** Where streams that fork from one tensor meet again (a residual add, a concatenation): for each operand, the
    * beats its FIFO must hold so the join never deadlocks and never stalls. An operand's stream lags the input by
    * what the layers on its slowest path hold (line-buffer rows + pipeline stages, summed along the path, the
    * most over a join's own operands); the operand that lags most needs no FIFO, every other one a FIFO holding
    * the difference, plus two beats (which also cut the combinational ready/valid loop through the fork). */
  def joinFifos(operands: Seq[String]): Seq[Int] = {
    val lag = mutable.Map("input" -> 0)
    def lagOf(n: String): Int = lag.get(n) match {
      case Some(v) => v
      case None =>
        val l = d.layer(n)
        val v = l.capacityPixels(done(n).stages) + l.reads.map(lagOf).max
        lag(n) = v
        v
    }
    val held = operands.map(lagOf)
    val longest = held.indexOf(held.max)
    held.zipWithIndex.map { case (h, i) => if (i == longest) 0 else (held.max - h + layer.par - 1) / layer.par + 2 }
  }

}

/** What a layer's `build` sees: the design, its planned figures, the shared line-buffer Definitions, and the
  * streams of other tensors it reads (`take`). */
final class BuildCtx(val d: DesignSpec, val layer: LayerSpec, val hw: LayerHw,
                     val windows: mutable.Map[WindowParams, Definition[WindowGen]],
                     val take: String => DecoupledIO[Vec[UInt]]) {
  val fmt: NumFmt = d.fmtOf(layer.src)
  /** Adder levels per register stage of this layer's tree: its own `levels_per_stage`, else the design's. */
  def levels: Int = layer.c.levels.getOrElse(d.levelsPerStage)
}

object Pipeline {
  /** Check each layer's derived fields against what the generator computes, and return the per-layer figures
    * for hw_params.json. Pure Scala: nothing is elaborated.
    */
  def plan(d: DesignSpec): Seq[LayerHw] = {
    val done = mutable.LinkedHashMap.empty[String, LayerHw]
    d.layers.zipWithIndex.foreach { case (layer, i) => done(layer.name) = layer.plan(new PlanCtx(d, layer, i, done)) }
    done.values.toSeq
  }

  def apply(d: DesignSpec): Pipeline = new Pipeline(d)
}
