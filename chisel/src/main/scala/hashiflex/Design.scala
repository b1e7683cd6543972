package hashiflex

import chisel3.{UInt, Vec}
import chisel3.util.DecoupledIO

import scala.util.{Failure, Success, Try}

/** design.json, read and validated. Every error names the field (a JSON path) and what was expected.
  *
  * The file is written by Python (hashiflex.export) against hashiflex/export/schema.json; this reader re-checks
  * it field by field and cross-checks the derived fields (shapes, widths) so that a hand-edited or stale file
  * never reaches elaboration.
  */
final case class DesignError(msg: String) extends Exception(msg)

/** A raw bit vector's meaning: `width` bits, two's complement when `signed`. */
final case class NumFmt(width: Int, signed: Boolean) {
  require(width >= 1, s"width must be >= 1, found $width")
  def lo: BigInt = if (signed) -(BigInt(1) << (width - 1)) else BigInt(0)
  def hi: BigInt = if (signed) (BigInt(1) << (width - 1)) - 1 else (BigInt(1) << width) - 1
}

object NumFmt {
  /** Smallest format holding [lo, hi]; unsigned when lo >= 0 (the same rule as hashiflex.numfmt.width_for). */
  def forBounds(b: Bounds): NumFmt =
    if (b.lo >= 0) NumFmt(math.max(1, b.hi.bitLength), signed = false)
    else NumFmt(math.max((-b.lo - 1).bitLength, b.hi.max(0).bitLength) + 1, signed = true)
}

final case class Bounds(lo: BigInt, hi: BigInt) {
  def +(o: Bounds): Bounds = Bounds(lo + o.lo, hi + o.hi)
  def -(o: Bounds): Bounds = Bounds(lo - o.hi, hi - o.lo)
  def <<(s: Int): Bounds = Bounds(lo << s, hi << s)
  def unary_- : Bounds = Bounds(-hi, -lo)
  def union(o: Bounds): Bounds = Bounds(lo.min(o.lo), hi.max(o.hi))
  override def toString = s"[$lo, $hi]"
}

final case class Shape(c: Int, h: Int, w: Int) {
  def pixels: Int = h * w
  override def toString = s"[$c, $h, $w]"
}

/** Po2 weight codes of one layer (hashiflex.numfmt): `terms` signed powers of two per weight, each a code, stored
  * term-major (all of term 0 in the weights' row-major order, then term 1, ...); a weight is the sum of its terms.
  */
final case class Po2Weights(bits: Int, eMin: Int, terms: Int, codes: IndexedSeq[Int]) {
  def maxCode: Int = (1 << (bits - 1)) - 1
  /** Weights per term (the product of the weight shape). */
  def count: Int = codes.length / terms
  /** Tree slots per tap: `terms` rounded up to a power of two, the rest empty, so pairs never straddle two taps
    * and a tap's terms meet in one subtree (w * x) that channels with the same weight share
    * (hashiflex.passes.slots_per_tap).
    */
  def perTap: Int = Integer.highestOneBit(2 * terms - 1)
  /** The slots of weights `first until first + taps` (one output channel): each tap's terms in turn, then empty
    * slots up to `perTap`, slot reading input `offset + tap` (the order hashiflex.passes.shared_adder_graph
    * follows).
    */
  def slots(first: Int, taps: Int, offset: Int = 0): IndexedSeq[Option[Term]] =
    for (i <- 0 until taps; t <- 0 until perTap) yield {
      val c = if (t < terms) codes(t * count + first + i) else 0
      if (c == 0) None else Some(Term(offset + i, math.abs(c) - 1, c < 0))
    }
}

/** `range`: the values the input takes when narrower than its format's (a layer's input fed alone). */
final case class InputSpec(shape: Shape, fmt: NumFmt, exp: Int, par: Int, range: Option[Bounds] = None) {
  def bounds: Bounds = range.getOrElse(Bounds(fmt.lo, fmt.hi))
}

/** Fields every layer has. `par` is the pixels per stream beat of the layer's output (its pixel parallelism,
  * chosen by Python for the target II); `inPar` is that of the stream it reads (`src`).
  *
  * One layer type is one spec class: how it is read (its `parse`, dispatched by op name in [[Design]]), checked
  * and counted (`plan`), and built (`build`); the abstract methods make a new type define all of them.
  */
trait LayerSpec {
  def c: Common
  def op: String
  def name: String = c.name
  def src: String = c.src
  def inShape: Shape = c.inShape
  def outShape: Shape = c.outShape
  def inBounds: Bounds = c.inBounds
  def outBounds: Bounds = c.outBounds
  def outFmt: NumFmt = c.outFmt
  def outExp: Int = c.outExp
  def inPar: Int = c.inPar
  def par: Int = c.par
  /** Stream beats per image on the input and the output. */
  def beatsIn: Int = inShape.pixels / inPar
  def beatsOut: Int = outShape.pixels / par
  /** Tensors it reads: `src` first (a residual add also reads its skip operand). */
  def reads: Seq[String] = Seq(src)
  /** Whether its output is a vector (one pixel per image), given whether its input is. */
  def vectorOut(inVector: Boolean): Boolean = inVector
  /** Check the derived fields against the generator's own arithmetic; the figures for hw_params.json. */
  def plan(ctx: PlanCtx): LayerHw
  /** Pixels it holds in flight (line-buffer rows plus pipeline stages): sizes residual FIFOs. */
  def capacityPixels(stages: Int): Int = stages * par
  /** Whether it has a tree (adders, comparators) pipelined every `levels_per_stage` levels. */
  def staged: Boolean = false
  /** Its hardware, reading stream `x` (from `src`). */
  def build(ctx: BuildCtx, x: DecoupledIO[Vec[UInt]]): DecoupledIO[Vec[UInt]]
}

/** What every layer record carries, read once. */
/** `levels`: adder levels per register stage of this layer's tree when not the design's default (None). */
final case class Common(name: String, src: String, inShape: Shape, outShape: Shape, inBounds: Bounds,
                        outBounds: Bounds, outFmt: NumFmt, outExp: Int, inPar: Int, par: Int, levels: Option[Int] = None)

/** Zero padding of a conv's input: rows above and below, columns left and right (TF 'SAME' pads more after). */
final case class Padding(top: Int, bottom: Int, left: Int, right: Int) {
  def any: Boolean = top + bottom + left + right > 0
  def symmetric: Boolean = Set(top, bottom, left, right).size == 1
  /** The output size of a kernel k, stride s on an h x w input. */
  def outHW(h: Int, w: Int, k: Int, s: Int): (Int, Int) = ((h + top + bottom - k) / s + 1, (w + left + right - k) / s + 1)
  def fits(h: Int, w: Int, k: Int): Boolean = h + top + bottom >= k && w + left + right >= k
  /** In module names: `p1` for 1 on every side, `pt0b1l0r1` otherwise. */
  def tag: String = if (symmetric) s"p$top" else s"pt${top}b${bottom}l${left}r$right"
  override def toString: String = if (symmetric) s"$top" else s"[$top, $bottom, $left, $right]"
}

object Padding {
  def all(p: Int): Padding = Padding(p, p, p, p)
  /** A `padding` field: one integer for every side, or [top, bottom, left, right]. */
  private[hashiflex] def parse(c: Cursor): Padding = c.v match {
    case _: ujson.Arr => val a = c.arrOf(4).map(_.intIn(0, 7)); Padding(a(0), a(1), a(2), a(3))
    case _            => all(c.intIn(0, 7))
  }
}

/** What a layer reads: an earlier layer's output or the design input. */
final case class TensorInfo(shape: Shape, bounds: Bounds, fmt: NumFmt, exp: Int, par: Int, vector: Boolean)

/** A layer record being read: its cursor, the common fields already checked, and the tensor it reads; the checks
  * every parser uses, each naming the field. */
private[hashiflex] final class LayerParse(val l: Cursor, val common: Common, val input: TensorInfo, val opPath: String,
                                          val tensors: collection.Map[String, TensorInfo]) {
  def src: String = common.src
  def expectShape(s: Shape): Unit =
    if (s != common.outShape) throw DesignError(s"${l.path}.out_shape: expected $s, found ${common.outShape}")
  def expectExp(e: Int, why: String): Unit =
    if (common.outExp != e) throw DesignError(s"${l.path}.out_exp: expected $e ($why), found ${common.outExp}")
  /** A layer that maps pixels one to one keeps its input's pixels per beat (`why` says which kind it is). */
  def samePar(why: String): Unit =
    if (common.par != input.par)
      throw DesignError(s"${l.path}.parallelism: expected ${input.par} (the parallelism of \"$src\"; $why), found ${common.par}")
  def expectBoundsKept(): Unit =
    if (common.outBounds != input.bounds)
      throw DesignError(s"${l.path}.out_bounds: expected ${input.bounds} (the in_bounds), found ${common.outBounds}")
}

/** A layer's adder graph for one pixel lane as design.json plans it (hashiflex.adders): sum j is node nIn + j =
  * (a << a.shift) +- (b << b.shift), its operands earlier nodes; output o is +-(root << shift) + bias(o) (None:
  * the bias alone). Read by [[Design]], which checks that every output expands exactly to its weights' terms; a
  * layer spec without one (ScalaTest specs that build layers directly) gets balanced trees ([[SharedPlan.apply]]).
  */
final case class AdderPlanSpec(sums: IndexedSeq[(SharedPlan.Ref, SharedPlan.Ref)], roots: IndexedSeq[Option[SharedPlan.Ref]])

final case class Conv2dSpec(c: Common, kernel: Int, stride: Int, padding: Padding, groups: Int, weights: Po2Weights,
                            bias: IndexedSeq[BigInt], adders: Option[AdderPlanSpec]) extends LayerSpec {
  val op = "conv2d"
  override def staged: Boolean = true
  def depthwise: Boolean = groups > 1
  /** A 1x1, stride 1, unpadded conv maps pixels one to one: no line buffer. */
  def pointwise: Boolean = kernel == 1 && stride == 1 && !padding.any
  def plan(ctx: PlanCtx): LayerHw = {
    val (win, pe) = Conv2dLayer.params(this, ctx.fmt, ctx.levels)
    ctx.expectBounds(pe.value, "from the weights, bias and in_bounds")
    ctx.hw(pe.adders, pe.schedule.stages, pe.registerBits,
      lineBuf = win.map(w => w.rows * w.width * w.channels * w.bits).getOrElse(0), unshared = pe.addersUnshared,
      bits = pe.adderBits)
  }
  override def capacityPixels(stages: Int): Int =
    if (pointwise) stages * par else inShape.w * Window.ringRows(kernel, stride, inPar, inShape.w, par, outShape.w) + stages * par
  def build(ctx: BuildCtx, x: DecoupledIO[Vec[UInt]]): DecoupledIO[Vec[UInt]] = Conv2dLayer(this, ctx.fmt, ctx.levels, x, ctx.windows)
}

final case class LinearSpec(c: Common, weights: Po2Weights, bias: IndexedSeq[BigInt], adders: Option[AdderPlanSpec]) extends LayerSpec {
  val op = "linear"
  override def staged: Boolean = true
  override def vectorOut(inVector: Boolean): Boolean = true
  def plan(ctx: PlanCtx): LayerHw = {
    val pe = LinearLayer.params(this, ctx.fmt, ctx.levels)
    ctx.expectBounds(pe.value, "from the weights, bias and in_bounds")
    ctx.hw(pe.adders, pe.schedule.stages, pe.registerBits, unshared = pe.addersUnshared, bits = pe.adderBits)
  }
  def build(ctx: BuildCtx, x: DecoupledIO[Vec[UInt]]): DecoupledIO[Vec[UInt]] =
    ShiftAddLayer(LinearLayer.params(this, ctx.fmt, ctx.levels), x)
}

final case class RequantSpec(c: Common, shift: Int, clamp: Bounds) extends LayerSpec {
  val op = "requant"
  def plan(ctx: PlanCtx): LayerHw = {
    ctx.expectBounds(ctx.requantized(inBounds, shift, clamp), "in_bounds shifted and clamped")
    ctx.hw(if (shift > 0) ctx.lanes else 0, 0)
  }
  def build(ctx: BuildCtx, x: DecoupledIO[Vec[UInt]]): DecoupledIO[Vec[UInt]] = Requant(this, ctx.fmt, x)
}

final case class SumPoolSpec(c: Common) extends LayerSpec {
  val op = "sum_pool"
  override def vectorOut(inVector: Boolean): Boolean = true
  def plan(ctx: PlanCtx): LayerHw = {
    val n = inShape.pixels
    ctx.expectBounds(Bounds(inBounds.lo * n, inBounds.hi * n), s"in_bounds times $n pixels")
    ctx.hw(inShape.c * inPar, 1, inShape.c * (2 * outFmt.width + 1))
  }
  def build(ctx: BuildCtx, x: DecoupledIO[Vec[UInt]]): DecoupledIO[Vec[UInt]] = SumPool(this, ctx.fmt, x)
}

/** Residual add: src << (exp(src) - accExp) + skip << (exp(skip) - accExp), then requantized by `shift`. */
final case class AddSpec(c: Common, skip: String, skipBounds: Bounds, srcShift: Int, skipShift: Int, accExp: Int,
                         shift: Int, clamp: Bounds) extends LayerSpec {
  val op = "add"
  override def reads: Seq[String] = Seq(src, skip)
  def plan(ctx: PlanCtx): LayerHw = {
    val sum = (inBounds << srcShift) + (skipBounds << skipShift)
    ctx.expectBounds(ctx.requantized(sum, shift, clamp), "the aligned sum of both operands, shifted and clamped")
    // either operand may be the shortcut: the one whose path holds less waits in a FIFO (PlanCtx.joinFifos)
    val f = ctx.joinFifos(Seq(src, skip))
    ctx.hw(ctx.lanes * (if (shift > 0) 2 else 1), 0, fifos = (f(0), f(1)))
  }
  def build(ctx: BuildCtx, x: DecoupledIO[Vec[UInt]]): DecoupledIO[Vec[UInt]] = {
    ResidualAdd(this, Fifo(x, ctx.hw.fifos._1), ctx.fmt, Fifo(ctx.take(skip), ctx.hw.fifos._2), ctx.d.fmtOf(skip))
  }
}

/** `npu`: the programmable head the backbone's last vector feeds (None: fully hardened; the last layer's stream is
  * the output). `iiCycles` covers both: max(backbone, NPU). */
final case class DesignSpec(name: String, input: InputSpec, levelsPerStage: Int, iiCycles: Int,
                            layers: IndexedSeq[LayerSpec], npu: Option[NpuSpec] = None) {
  /** Cycles per image of the hardened layers alone. */
  def backboneIi: Int = (input.shape.pixels / input.par +: layers.map(_.beatsOut)).max
  private val byName: Map[String, LayerSpec] = layers.map(l => l.name -> l).toMap
  def fmtOf(name: String): NumFmt = if (name == "input") input.fmt else byName(name).outFmt
  def parOf(name: String): Int = if (name == "input") input.par else byName(name).par
  def layer(name: String): LayerSpec = byName(name)
  /** Names of the layers (and "input") each tensor feeds, in layer order; the last layer also feeds the output. */
  def consumers: Map[String, Int] = {
    val refs = layers.flatMap(_.reads) :+ layers.last.name
    refs.groupBy(identity).view.mapValues(_.size).toMap
  }
}

/** A JSON value with the path it was found at, for error messages. */
private[hashiflex] final class Cursor(val v: ujson.Value, val path: String) {
  private def fail(expected: String): Nothing =
    throw DesignError(s"$path: expected $expected, found ${Cursor.show(v)}")
  def field(name: String): Cursor = v match {
    case o: ujson.Obj => o.value.get(name) match {
        case Some(x) => new Cursor(x, s"$path.$name")
        case None    => throw DesignError(s"$path.$name: required field is missing")
      }
    case _ => fail("an object")
  }
  def has(name: String): Boolean = v match { case o: ujson.Obj => o.value.contains(name); case _ => false }
  def str: String = v match { case ujson.Str(s) => s; case _ => fail("a string") }
  def bool: Boolean = v match { case ujson.Bool(b) => b; case _ => fail("true or false") }
  def bigint: BigInt = v match {
    case ujson.Num(d) if d.isWhole && math.abs(d) <= 9.007199254740992e15 => BigInt(d.toLong)
    case _ => fail("an integer of magnitude <= 2^53")
  }
  def int: Int = { val b = bigint; if (!b.isValidInt) fail("a 32-bit integer"); b.toInt }
  def intIn(lo: Int, hi: Int): Int = {
    val i = int
    if (i < lo || i > hi) fail(s"an integer in [$lo, $hi]")
    i
  }
  def arr: IndexedSeq[Cursor] = v match {
    case a: ujson.Arr => a.value.toIndexedSeq.zipWithIndex.map { case (x, i) => new Cursor(x, s"$path[$i]") }
    case _ => fail("an array")
  }
  def arrOf(n: Int): IndexedSeq[Cursor] = {
    val a = arr
    if (a.length != n) throw DesignError(s"$path: expected $n entries, found ${a.length}")
    a
  }
  def shape: Shape = { val a = arrOf(3).map(_.intIn(1, 1 << 20)); Shape(a(0), a(1), a(2)) }
  def bounds: Bounds = {
    val a = arrOf(2).map(_.bigint)
    if (a(0) > a(1)) throw DesignError(s"$path: expected [lo, hi] with lo <= hi, found [${a(0)}, ${a(1)}]")
    Bounds(a(0), a(1))
  }
}

private[hashiflex] object Cursor {
  def show(v: ujson.Value): String = {
    val s = v.render()
    if (s.length > 60) s.take(57) + "..." else s
  }
}

object Design {
  val Format = "hashiflex.design"
  val Version = 1

  def load(path: os.Path): DesignSpec = {
    val text = Try(os.read(path)) match {
      case Success(t) => t
      case Failure(e) => throw DesignError(s"$path: cannot read the design file (${e.getMessage})")
    }
    parse(text, path / os.up)
  }

  /** `base` is the folder weight tables (`weights.table.file`) are read from. */
  def parse(text: String, base: os.Path = os.pwd): DesignSpec = {
    val json = Try(ujson.read(text)) match {
      case Success(j) => j
      case Failure(e) => throw DesignError(s"design.json: not valid JSON (${e.getMessage.take(200)})")
    }
    fromJson(new Cursor(json, "design"), base)
  }


  private def fromJson(d: Cursor, base: os.Path): DesignSpec = {
    val format = d.field("format")
    if (format.str != Format) throw DesignError(s"${format.path}: expected \"$Format\", found ${Cursor.show(format.v)}")
    val version = d.field("version")
    if (version.int != Version) throw DesignError(s"${version.path}: expected $Version, found ${Cursor.show(version.v)}")
    val name = d.field("name").str
    if (!name.matches("[A-Za-z][A-Za-z0-9_]*"))
      throw DesignError(s"design.name: expected an identifier ([A-Za-z][A-Za-z0-9_]*), found \"$name\"")
    val in = d.field("input")
    val inShape = in.field("shape").shape
    val inPar = in.field("parallelism")
    val inFmt = NumFmt(in.field("bits").intIn(1, 32), in.field("signed").bool)
    val inRange = if (!in.has("bounds")) None else {
      val b = in.field("bounds")
      val r = b.bounds
      if (r.lo < inFmt.lo || r.hi > inFmt.hi)
        throw DesignError(s"${b.path}: expected [lo, hi] within [${inFmt.lo}, ${inFmt.hi}] (the input format's range), found ${Cursor.show(b.v)}")
      Some(r)
    }
    val input = InputSpec(inShape, inFmt, in.field("exp").intIn(-256, 256), inPar.intIn(1, inShape.pixels), inRange)
    if (!Window.fits(input.par, inShape.h, inShape.w))
      throw DesignError(s"${inPar.path}: expected ${Window.rule(inShape.h, inShape.w)}, found ${input.par}")
    val hwc = d.field("hardware")
    val levels = hwc.field("adder_levels_per_stage").intIn(1, 64)
    val ls = d.field("layers").arr
    if (ls.isEmpty) throw DesignError("design.layers: expected at least one layer, found none")
    val tensors = scala.collection.mutable.LinkedHashMap(
      "input" -> TensorInfo(input.shape, input.bounds, input.fmt, input.exp, input.par, vector = false))
    val layers = ls.map { l =>
      val spec = layer(l, tensors, base)
      if (spec.c.levels.isDefined && !spec.staged)
        throw DesignError(s"${l.path}.levels_per_stage: layer \"${spec.name}\" (${spec.op}) has no adder or comparator tree to pipeline; only conv2d, linear and max_pool2d take levels per stage")
      if (tensors.contains(spec.name))
        throw DesignError(s"${l.path}.name: layer name \"${spec.name}\" is used twice")
      tensors(spec.name) = TensorInfo(spec.outShape, spec.outBounds, spec.outFmt, spec.outExp, spec.par,
        spec.vectorOut(tensors(spec.src).vector))
      spec
    }
    val npu = if (d.has("npu")) Some(npuSpec(d.field("npu"), layers.last)) else None
    val out = d.field("output")
    val of = out.field("features")
    val features = npu.map(_.capacity).getOrElse(layers.last.outShape.c * layers.last.outShape.pixels)
    if (of.int != features)
      throw DesignError(s"${of.path}: expected $features (${if (npu.isDefined) "the NPU's capacity" else "the last layer's outputs"}), found ${of.int}")
    for (n <- npu) {
      val ow = out.field("width")
      if (ow.int != n.outBits) throw DesignError(s"${ow.path}: expected ${n.outBits} (npu.out_bits), found ${ow.int}")
      val os = out.field("signed")
      if (!os.bool) throw DesignError(s"${os.path}: expected true (the NPU's logits are signed), found false")
    }
    val backbone = DesignSpec(name, input, levels, 0, layers).backboneIi
    val ii = math.max(backbone, npu.map(_.cyclesPerImage).getOrElse(0))
    val iiC = hwc.field("ii_cycles_per_image")
    if (iiC.int != ii)
      throw DesignError(s"${iiC.path}: expected $ii (the most stream beats per image of any tensor${if (npu.isDefined) ", or the NPU's cycles per image" else ""}), found ${iiC.int}")
    DesignSpec(name, input, levels, ii, layers, npu)
  }

  /** The `npu` section: free choices range-checked, derived fields re-derived, and its input tied to the last layer. */
  private def npuSpec(n: Cursor, last: LayerSpec): NpuSpec = {
    val inF = n.field("in_features")
    if (last.outShape.pixels != 1 || inF.int != last.outShape.c)
      throw DesignError(s"${inF.path}: expected ${last.outShape.c} (the vector of \"${last.name}\", whose shape is ${last.outShape}; the NPU reads one vector per image), found ${inF.int}")
    val inB = n.field("in_bounds")
    if (inB.bounds != last.outBounds)
      throw DesignError(s"${inB.path}: expected ${last.outBounds} (the out_bounds of \"${last.name}\"), found ${Cursor.show(inB.v)}")
    val fmt = NumFmt(n.field("in_width").intIn(1, 62), n.field("in_signed").bool)
    if (fmt != last.outFmt)
      throw DesignError(s"${n.path}.in_width: expected ${last.outFmt.width} (signed=${last.outFmt.signed}, the format of \"${last.name}\"), found ${fmt.width} (signed=${fmt.signed})")
    val cap = n.field("capacity").intIn(1, 65535)
    val wb = n.field("weight_bits").intIn(2, 16)
    val bb = n.field("bias_bits").intIn(2, 32)
    val aw = NpuSpec.accWidthFor(inF.int, last.outBounds, wb, bb)
    if (aw > 62) throw DesignError(s"${n.path}.acc_width: the accumulator needs $aw bits, more than 62: use fewer weight or bias bits")
    val awC = n.field("acc_width")
    if (awC.int != aw)
      throw DesignError(s"${awC.path}: expected $aw (in_features x max|input| x 2^(weight_bits-1) + 2^(bias_bits-1), signed), found ${awC.int}")
    val ms = n.field("max_shift")
    if (ms.int != aw - 1) throw DesignError(s"${ms.path}: expected ${aw - 1} (acc_width - 1), found ${ms.int}")
    val spec = NpuSpec(inF.int, last.outFmt, cap, n.field("lanes").intIn(1, cap), n.field("width").intIn(1, inF.int), wb,
      bb, aw, n.field("out_bits").intIn(2, 32), aw - 1, n.field("top_k").intIn(1, cap), n.field("scan").intIn(1, cap))
    val cyc = n.field("cycles_per_image")
    if (cyc.int != spec.cyclesPerImage)
      throw DesignError(s"${cyc.path}: expected ${spec.cyclesPerImage} (max(S, ceil((S + ceil(capacity / scan) + ${NpuSpec.ScanOverhead}) / 2)), S = tiles x chunks = ${spec.schedule}), found ${cyc.int}")
    spec
  }

  /** The layer types design.json may name, each read by its own parser (the spec classes). */
  val Ops: Seq[String] = Seq("conv2d", "linear", "requant", "sum_pool", "add", "max_pool2d", "concat", "lut", "channel_select")

  private def layer(l: Cursor, tensors: collection.Map[String, TensorInfo], base: os.Path): LayerSpec = {
    val name = l.field("name").str
    val op = l.field("op")
    val srcC = l.field("src")
    val src = srcC.str
    val t = tensors.getOrElse(src, throw DesignError(
      s"${srcC.path}: expected \"input\" or an earlier layer's name, found \"$src\""))
    val inShape = l.field("in_shape")
    if (inShape.shape != t.shape)
      throw DesignError(s"${inShape.path}: expected ${t.shape} (the out_shape of \"$src\"), found ${Cursor.show(inShape.v)}")
    val inB = l.field("in_bounds")
    if (inB.bounds != t.bounds)
      throw DesignError(s"${inB.path}: expected ${t.bounds} (the out_bounds of \"$src\"), found ${Cursor.show(inB.v)}")
    val outShapeC = l.field("out_shape")
    val outShape = outShapeC.shape
    val outBounds = l.field("out_bounds").bounds
    val fmt = NumFmt(l.field("out_width").intIn(1, 62), l.field("out_signed").bool)
    val want = NumFmt.forBounds(outBounds)
    if (fmt != want)
      throw DesignError(s"${l.path}.out_width: expected ${want.width} (signed=${want.signed}) for out_bounds $outBounds, found ${fmt.width} (signed=${fmt.signed})")
    val parC = l.field("parallelism")
    val par = parC.intIn(1, 1 << 20)
    if (!Window.fits(par, outShape.h, outShape.w))
      throw DesignError(s"${parC.path}: expected ${Window.rule(outShape.h, outShape.w)}, found $par")
    def samePar(why: String): Unit =
      if (par != t.par) throw DesignError(s"${parC.path}: expected ${t.par} (the parallelism of \"$src\"; $why), found $par")
    val levels = if (l.has("levels_per_stage")) Some(l.field("levels_per_stage").intIn(1, 64)) else None
    val common = Common(name, src, t.shape, outShape, t.bounds, outBounds, fmt, l.field("out_exp").intIn(-1024, 1024), t.par, par, levels)
    def expectShape(s: Shape): Unit =
      if (s != outShape) throw DesignError(s"${outShapeC.path}: expected $s, found $outShape")
    val prevShape = t.shape
    def expectExp(e: Int, why: String): Unit =
      if (common.outExp != e) throw DesignError(s"${l.path}.out_exp: expected $e ($why), found ${common.outExp}")
    op.str match {
      case "conv2d" =>
        val k = l.field("kernel").intIn(1, 15)
        val s = l.field("stride").intIn(1, 8)
        val p = Padding.parse(l.field("padding"))
        val groupsC = l.field("groups")
        val groups = groupsC.int
        if (t.vector) throw DesignError(s"${op.path}: a conv2d needs a feature map, but \"$src\" is a vector")
        if (groups != 1 && !(groups == prevShape.c && groups == outShape.c))
          throw DesignError(s"${groupsC.path}: expected 1 or ${prevShape.c} (depthwise: groups = in = out channels), found $groups")
        if (!p.fits(prevShape.h, prevShape.w, k))
          throw DesignError(s"${l.path}.kernel: expected a kernel that fits the ${prevShape.h}x${prevShape.w} input padded by $p, found $k")
        val (oh, ow) = p.outHW(prevShape.h, prevShape.w, k, s)
        expectShape(Shape(outShape.c, oh, ow))
        val w = weights(l.field("weights"), Seq(outShape.c, prevShape.c / groups, k, k), base)
        expectExp(t.exp + w.eMin, "the input exponent + weights.e_min")
        val taps = (prevShape.c / groups) * k * k
        val plan = adders(l.field("adders"), prevShape.c * k * k, outShape.c, base,
          o => w.slots(o * taps, taps, if (groups > 1) o * k * k else 0))
        val spec = Conv2dSpec(common, k, s, p, groups, w, bias(l.field("bias"), outShape.c), Some(plan))
        if (spec.pointwise) samePar("a 1x1 conv maps pixels one to one")
        spec
      case "linear" =>
        expectShape(Shape(outShape.c, 1, 1))
        if (prevShape.pixels != 1)
          throw DesignError(s"${srcC.path}: a linear layer reads a vector (one pixel), found the ${prevShape.h}x${prevShape.w} map of \"$src\"")
        val w = weights(l.field("weights"), Seq(outShape.c, prevShape.c), base)
        expectExp(t.exp + w.eMin, "the input exponent + weights.e_min")
        val n = prevShape.c
        LinearSpec(common, w, bias(l.field("bias"), outShape.c), Some(adders(l.field("adders"), n, outShape.c, base, o => w.slots(o * n, n))))
      case "requant" =>
        expectShape(prevShape)
        samePar("requant maps pixels one to one")
        val shift = l.field("shift")
        val want = common.outExp - t.exp
        if (shift.int != want)
          throw DesignError(s"${shift.path}: expected $want (out_exp ${common.outExp} - exponent ${t.exp} of \"$src\"), found ${shift.int}")
        RequantSpec(common, shift.intIn(-62, 62), l.field("clamp").bounds)
      case "sum_pool" =>
        if (t.vector) throw DesignError(s"${op.path}: a global pool needs a feature map, but \"$src\" is a vector")
        expectShape(Shape(prevShape.c, 1, 1))
        expectExp(t.exp, "a sum keeps the input exponent")
        if (par != 1) throw DesignError(s"${parC.path}: expected 1 (a pool emits one vector per image), found $par")
        SumPoolSpec(common)
      case "add" =>
        expectShape(prevShape)
        samePar("add maps pixels one to one")
        val skipC = l.field("skip")
        val skip = skipC.str
        val u = tensors.getOrElse(skip, throw DesignError(
          s"${skipC.path}: expected \"input\" or an earlier layer's name, found \"$skip\""))
        if (u.shape != prevShape)
          throw DesignError(s"${skipC.path}: expected a tensor of shape $prevShape (like \"$src\"), found ${u.shape} from \"$skip\"")
        if (u.par != t.par)
          throw DesignError(s"${skipC.path}: expected parallelism ${t.par} (like \"$src\"), found ${u.par} from \"$skip\"")
        val accC = l.field("acc_exp")
        val acc = math.min(t.exp, u.exp)
        if (accC.int != acc)
          throw DesignError(s"${accC.path}: expected $acc (the finer exponent of the operands), found ${accC.int}")
        val shift = l.field("shift")
        if (shift.int != common.outExp - acc)
          throw DesignError(s"${shift.path}: expected ${common.outExp - acc} (out_exp - acc_exp), found ${shift.int}")
        AddSpec(common, skip, u.bounds, t.exp - acc, u.exp - acc, acc, shift.int, l.field("clamp").bounds)
      case "max_pool2d" =>
        MaxPoolSpec.parse(new LayerParse(l, common, t, op.path, tensors))
      case "concat" =>
        ConcatSpec.parse(new LayerParse(l, common, t, op.path, tensors))
      case "lut" =>
        LutSpec.parse(new LayerParse(l, common, t, op.path, tensors))
      case "channel_select" =>
        ChannelSelectSpec.parse(new LayerParse(l, common, t, op.path, tensors))
      case other =>
        throw DesignError(s"${op.path}: expected one of ${Ops.map(o => s"\"$o\"").mkString(", ")}, found \"$other\"")
    }
  }

  private def weights(w: Cursor, shape: Seq[Int], base: os.Path): Po2Weights = {
    val bits = w.field("bits").intIn(2, 8)
    val eMin = w.field("e_min").intIn(-128, 128)
    val sh = w.field("shape").arrOf(shape.length).map(_.int)
    if (sh != shape)
      throw DesignError(s"${w.path}.shape: expected ${shape.mkString("[", ", ", "]")}, found ${sh.mkString("[", ", ", "]")}")
    val terms = w.field("terms").intIn(1, 4)
    val maxCode = (1 << (bits - 1)) - 1
    val n = terms * shape.product
    val codes =
      if (w.has("table")) table(w.field("table"), n, base).zipWithIndex.map { case (c, i) =>
        if (math.abs(c) > maxCode) throw DesignError(s"${w.path}.table: code $i is $c, expected an integer in [-$maxCode, $maxCode]")
        c
      }
      else w.field("codes").arrOf(n).map(_.intIn(-maxCode, maxCode))
    Po2Weights(bits, eMin, terms, codes)
  }

  /** The `adders` plan of a layer with `nIn` lane inputs and `outC` outputs: every index and shift range-checked,
    * every operand an earlier node, and every output expanded into its input terms and compared with
    * `slotsOf(o)`, the terms of output o's weights (the deliberate check that the plan computes W x exactly).
    */
  private def adders(a: Cursor, nIn: Int, outC: Int, base: os.Path, slotsOf: Int => IndexedSeq[Option[Term]]): AdderPlanSpec = {
    import SharedPlan.Ref
    val (sv, rv, sumsPath, rootsPath) =
      if (a.has("table")) {
        val t = a.field("table")
        val all = int32Table(t, base)
        if (all.length < 3 * outC || (all.length - 3 * outC) % 5 != 0)
          throw DesignError(s"${t.path}.count: expected 5 per sum + 3 per output channel ($outC), found ${all.length}")
        (all.dropRight(3 * outC).map(BigInt(_)), all.takeRight(3 * outC).map(BigInt(_)), s"${t.path}[sums]", s"${t.path}[roots]")
      } else {
        val sc = a.field("sums")
        val s = sc.arr.map(_.bigint)
        if (s.length % 5 != 0) throw DesignError(s"${sc.path}: expected 5 integers per sum (a, a_shift, b, b_shift, b_neg), found ${s.length}")
        (s, a.field("roots").arrOf(3 * outC).map(_.bigint), sc.path, a.field("roots").path)
      }
    val m = sv.length / 5
    def int(v: BigInt, lo: Int, hi: Int, what: => String): Int =
      if (v < lo || v > hi) throw DesignError(s"$what: expected an integer in [$lo, $hi], found $v") else v.toInt
    val sums = (0 until m).map { j =>
      val f = sv.slice(5 * j, 5 * j + 5)
      val top = nIn + j - 1
      (Ref(int(f(0), 0, top, s"$sumsPath[${5 * j}] (sum $j's first operand: an input or an earlier sum)"),
        int(f(1), 0, 62, s"$sumsPath[${5 * j + 1}] (sum $j's first shift)"), neg = false),
        Ref(int(f(2), 0, top, s"$sumsPath[${5 * j + 2}] (sum $j's second operand: an input or an earlier sum)"),
          int(f(3), 0, 62, s"$sumsPath[${5 * j + 3}] (sum $j's second shift)"),
          int(f(4), 0, 1, s"$sumsPath[${5 * j + 4}] (sum $j's sign: 0 add, 1 subtract)") == 1))
    }
    val roots = (0 until outC).map { o =>
      val node = int(rv(3 * o), -1, nIn + m - 1, s"$rootsPath[${3 * o}] (output $o's root: -1, an input or a sum)")
      val shift = int(rv(3 * o + 1), 0, 62, s"$rootsPath[${3 * o + 1}] (output $o's shift)")
      val neg = int(rv(3 * o + 2), 0, 1, s"$rootsPath[${3 * o + 2}] (output $o's sign)") == 1
      if (node < 0) None else Some(Ref(node, shift, neg))
    }
    // each output, expanded through the sums into input terms, must be its weights
    for ((root, o) <- roots.zipWithIndex) {
      val got = scala.collection.mutable.HashMap.empty[Int, BigInt].withDefaultValue(BigInt(0))
      def expand(r: Ref, shift: Int, neg: Boolean): Unit = {
        val s = shift + r.shift
        val n = neg != r.neg
        if (r.node < nIn) got(r.node) += (if (n) -(BigInt(1) << s) else BigInt(1) << s)
        else { val (x, y) = sums(r.node - nIn); expand(x, s, n); expand(y, s, n) }
      }
      root.foreach(expand(_, 0, neg = false))
      val want = scala.collection.mutable.HashMap.empty[Int, BigInt].withDefaultValue(BigInt(0))
      for (t <- slotsOf(o).flatten) want(t.index) += (if (t.negative) -(BigInt(1) << t.shift) else BigInt(1) << t.shift)
      val bad = (got.keySet ++ want.keySet).toSeq.sorted.find(i => got(i) != want(i))
      for (i <- bad)
        throw DesignError(s"${a.path}: output channel $o computes ${got(i)} x input $i, but its weights give ${want(i)} (the plan does not compute the weights)")
    }
    AdderPlanSpec(sums, roots)
  }

  /** int32 values (little-endian) in a binary table beside design.json, checked against count and SHA-256. */
  private def int32Table(t: Cursor, base: os.Path): IndexedSeq[Int] = {
    val n = t.field("count").intIn(0, Int.MaxValue / 4)
    val b = java.nio.ByteBuffer.wrap(tableBytes(t, 4 * n, n, base)).order(java.nio.ByteOrder.LITTLE_ENDIAN)
    IndexedSeq.fill(n)(b.getInt)
  }

  /** Codes stored as int8 in a binary table beside design.json, checked against count and SHA-256. */
  private def table(t: Cursor, n: Int, base: os.Path): IndexedSeq[Int] = {
    val count = t.field("count")
    if (count.int != n) throw DesignError(s"${count.path}: expected $n (the weight shape's size), found ${count.int}")
    tableBytes(t, n, n, base).toIndexedSeq.map(_.toInt)
  }

  /** `nBytes` bytes (`count` items) of a table beside design.json, checked against SHA-256. */
  private def tableBytes(t: Cursor, nBytes: Int, n: Int, base: os.Path): Array[Byte] = {
    val file = t.field("file").str
    if (!file.matches("[A-Za-z0-9_.-]+")) throw DesignError(s"${t.path}.file: expected a file name beside design.json, found \"$file\"")
    val offset = t.field("offset").intIn(0, Int.MaxValue)
    val count = t.field("count")
    val all = Try(os.read.bytes(base / file)) match {
      case Success(b) => b
      case Failure(e) => throw DesignError(s"${t.path}.file: cannot read ${base / file} (${e.getMessage})")
    }
    if (offset.toLong + nBytes > all.length)
      throw DesignError(s"${count.path}: expected $nBytes bytes at offset $offset of $file, found ${math.max(0, all.length - offset)}")
    val bytes = all.slice(offset, offset + nBytes)
    val sha = java.security.MessageDigest.getInstance("SHA-256").digest(bytes).map(b => f"${b & 0xff}%02x").mkString
    val want = t.field("sha256").str
    if (sha != want) throw DesignError(s"${t.path}.sha256: expected $want, found $sha (corrupt or stale table)")
    bytes
  }

  private def bias(b: Cursor, n: Int): IndexedSeq[BigInt] = b.arrOf(n).map(_.bigint)
}
