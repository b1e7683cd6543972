package hashiflex

import chisel3._
import chisel3.util._

/** The whole hardened network: layers chained by ready/valid streams of pixels (all channels per beat). */
class Pipeline(val d: DesignSpec) extends Module {
  override def desiredName: String = s"Hashiflex_${d.name}"
  private val hw = Pipeline.plan(d) // validates before any hardware is built
  val in = IO(Flipped(Decoupled(Vec(d.input.shape.c, UInt(d.input.fmt.width.W)))))
  val out = IO(Decoupled(Vec(d.layers.last.outShape.c, UInt(d.layers.last.outFmt.width.W))))

  private val result = d.layers.zipWithIndex.foldLeft(in: DecoupledIO[Vec[UInt]]) { case (x, (layer, i)) =>
    val fmt = d.inFmt(i)
    layer match {
      case s: Conv2dSpec  => Conv2dLayer(s, fmt, d.levelsPerStage, x)
      case s: LinearSpec  => ShiftAddLayer(LinearLayer.params(s, fmt, d.levelsPerStage), x)
      case s: RequantSpec => Requant(s, fmt, x)
      case s: SumPoolSpec => SumPool(s, fmt, x)
    }
  }
  out <> result
}

object Pipeline {
  private def rq(x: BigInt, s: Int, c: Bounds): BigInt = {
    val y = if (s > 0) (x + (BigInt(1) << (s - 1))) >> s else if (s < 0) x << -s else x
    y.max(c.lo).min(c.hi)
  }

  /** Check each layer's derived fields against what the generator computes, and return the per-layer figures
    * for hw_params.json. Pure Scala: nothing is elaborated.
    */
  def plan(d: DesignSpec): Seq[LayerHw] = d.layers.zipWithIndex.map { case (layer, i) =>
    val fmt = d.inFmt(i)
    val where = s"design.layers[$i]"
    def expectBounds(b: Bounds, why: String): Unit =
      if (b != layer.outBounds)
        throw DesignError(s"$where.out_bounds: expected $b ($why), found ${layer.outBounds} (layer \"${layer.name}\")")
    layer match {
      case s: Conv2dSpec =>
        val (_, pe) = Conv2dLayer.params(s, fmt, d.levelsPerStage)
        expectBounds(pe.value, "from the weights, bias and in_bounds")
        LayerHw(s.name, s.op, s.outFmt.width, pe.adders, pe.schedule.stages, s.inShape.pixels)
      case s: LinearSpec =>
        val pe = LinearLayer.params(s, fmt, d.levelsPerStage)
        expectBounds(pe.value, "from the weights, bias and in_bounds")
        LayerHw(s.name, s.op, s.outFmt.width, pe.adders, pe.schedule.stages, s.inShape.pixels)
      case s: RequantSpec =>
        expectBounds(Bounds(rq(s.inBounds.lo, s.shift, s.clamp), rq(s.inBounds.hi, s.shift, s.clamp)),
          "in_bounds shifted and clamped")
        LayerHw(s.name, s.op, s.outFmt.width, if (s.shift > 0) s.inShape.c else 0, 0, s.inShape.pixels)
      case s: SumPoolSpec =>
        val n = s.inShape.pixels
        expectBounds(Bounds(s.inBounds.lo * n, s.inBounds.hi * n), s"in_bounds times $n pixels")
        LayerHw(s.name, s.op, s.outFmt.width, s.inShape.c, 1, n)
    }
  }

  def apply(d: DesignSpec): Pipeline = new Pipeline(d)
}
