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
    val fmt = d.fmtOf(layer.src)
    val y = chisel3.experimental.noPrefix { layer match { // instances are named after their layers
      case s: Conv2dSpec  => Conv2dLayer(s, fmt, d.levelsPerStage, x, windows)
      case s: LinearSpec  => ShiftAddLayer(LinearLayer.params(s, fmt, d.levelsPerStage), x)
      case s: RequantSpec => Requant(s, fmt, x)
      case s: SumPoolSpec => SumPool(s, fmt, x)
      case s: AddSpec     =>
        def buffered(v: DecoupledIO[Vec[UInt]], depth: Int) = if (depth > 0) Queue(v, depth) else v
        ResidualAdd(s, buffered(x, h.fifos._1), fmt, buffered(take(s.skip), h.fifos._2), d.fmtOf(s.skip))
    }}
    produce(layer.name, y)
  }
  out <> take(last.name)
}

object Pipeline {
  /** Pixels a layer can hold in flight (line buffer rows plus pipeline registers); sizes residual FIFOs. */
  private def capacityPixels(l: LayerSpec, stages: Int): Int = l match {
    case s: Conv2dSpec if !s.pointwise => s.inShape.w * (s.kernel + s.stride) + stages * s.par
    case s: LayerSpec                  => stages * s.par
  }

  /** Check each layer's derived fields against what the generator computes, and return the per-layer figures
    * for hw_params.json. Pure Scala: nothing is elaborated.
    */
  def plan(d: DesignSpec): Seq[LayerHw] = {
    val done = mutable.LinkedHashMap.empty[String, LayerHw]
    d.layers.zipWithIndex.foreach { case (layer, i) =>
      val fmt = d.fmtOf(layer.src)
      val where = s"design.layers[$i]"
      def expectBounds(b: Bounds, why: String): Unit =
        if (b != layer.outBounds)
          throw DesignError(s"$where.out_bounds: expected $b ($why), found ${layer.outBounds} (layer \"${layer.name}\")")
      def rq(b: Bounds, s: Int, c: Bounds) = Bounds(Requantize.reference(b.lo, s, c), Requantize.reference(b.hi, s, c))
      def hw(adders: Int, stages: Int, regs: Int = 0, fifos: (Int, Int) = (0, 0), lineBuf: Int = 0,
             unshared: Int = -1, bits: Int = -1) =
        LayerHw(layer.name, layer.op, layer.outFmt.width, adders, stages, layer.beatsIn, layer.beatsOut, layer.par,
          regs, fifos, lineBuf, unshared, bits)
      val lanes = layer.inShape.c * layer.par
      done(layer.name) = layer match {
        case s: Conv2dSpec =>
          val (win, pe) = Conv2dLayer.params(s, fmt, d.levelsPerStage)
          expectBounds(pe.value, "from the weights, bias and in_bounds")
          hw(pe.adders, pe.schedule.stages, pe.registerBits,
            lineBuf = win.map(w => w.rows * w.width * w.channels * w.bits).getOrElse(0), unshared = pe.addersUnshared,
            bits = pe.adderBits)
        case s: LinearSpec =>
          val pe = LinearLayer.params(s, fmt, d.levelsPerStage)
          expectBounds(pe.value, "from the weights, bias and in_bounds")
          hw(pe.adders, pe.schedule.stages, pe.registerBits, unshared = pe.addersUnshared, bits = pe.adderBits)
        case s: RequantSpec =>
          expectBounds(rq(s.inBounds, s.shift, s.clamp), "in_bounds shifted and clamped")
          hw(if (s.shift > 0) lanes else 0, 0)
        case s: SumPoolSpec =>
          val n = s.inShape.pixels
          expectBounds(Bounds(s.inBounds.lo * n, s.inBounds.hi * n), s"in_bounds times $n pixels")
          hw(s.inShape.c * s.inPar, 1, s.inShape.c * (2 * s.outFmt.width + 1))
        case s: AddSpec =>
          val sum = (s.inBounds << s.srcShift) + (s.skipBounds << s.skipShift)
          expectBounds(rq(sum, s.shift, s.clamp), "the aligned sum of both operands, shifted and clamped")
          // The operands meet where their src chains meet (the fork). The shorter path waits in a FIFO that
          // holds what the longer one can hold beyond it (line-buffer rows + pipeline stages), so the join
          // never deadlocks and never stalls the stream. Either operand may be the shortcut.
          def chain(n: String): List[String] =
            Iterator.iterate(n)(x => if (x == "input") null else d.layer(x).src).takeWhile(_ != null).toList
          val (ca, cb) = (chain(s.src), chain(s.skip))
          val fork = ca.find(cb.toSet).getOrElse("input")
          def held(c: List[String]): Int =
            c.takeWhile(_ != fork).map(n => capacityPixels(d.layer(n), done(n).stages)).sum
          val (pa, pb) = (held(ca), held(cb))
          def depth(pixels: Int) = (pixels + s.par - 1) / s.par + 2
          // equal paths still get a small FIFO: it cuts the combinational ready/valid loop through the fork
          val fifos = if (pa < pb) (depth(pb - pa), 0) else (0, depth(pa - pb))
          hw(lanes * (if (s.shift > 0) 2 else 1), 0, fifos = fifos)
      }
    }
    done.values.toSeq
  }

  def apply(d: DesignSpec): Pipeline = new Pipeline(d)
}
