package hashiflex

import chisel3._
import chisel3.util._
import chisel3.experimental.hierarchy.{instantiable, public, Definition, Instance}

/** One term of a Po2 dot product: input `index`, shifted left by `shift`, added or (when `negative`) subtracted. */
final case class Term(index: Int, shift: Int, negative: Boolean)

object Term {
  /** Terms of one output channel from its weight codes (code c != 0: shift |c|-1, sign of c); zeros vanish. */
  def fromCodes(codes: Seq[Int]): Seq[Term] =
    codes.zipWithIndex.collect { case (c, i) if c != 0 => Term(i, math.abs(c) - 1, c < 0) }
}

/** The plan of one shift-add tree (pure Scala): which adder combines what, with exact value intervals.
  *
  * A node's value is `-mag` when `neg`, else `mag`; signs are folded into add/subtract so a negative weight costs
  * no negation: (+a)+(+b), (-a)+(-b) -> a+b; (+a)+(-b) -> a-b; (-a)+(+b) -> b-a. Leaves are paired level by level
  * in index order (bias last); only an all-negative tree needs one final 0-x. Every node's width is the exact
  * signed width of its interval, so nothing can overflow.
  */
object TreePlan {
  sealed trait Node { def mag: Bounds; def neg: Boolean; val id: Int }
  final case class Leaf(id: Int, term: Term, mag: Bounds) extends Node { def neg: Boolean = term.negative }
  final case class Const(id: Int, value: BigInt) extends Node {
    def mag: Bounds = Bounds(value.abs, value.abs); def neg: Boolean = value < 0
  }
  /** mag = a.mag + b.mag (same sign) or a.mag - b.mag (`sub`: a positive, b negative) or 0 - a.mag (`b` = None). */
  final case class Op(id: Int, a: Node, b: Option[Node], sub: Boolean, mag: Bounds, neg: Boolean) extends Node

  final case class Plan(levels: IndexedSeq[IndexedSeq[Node]], adders: Int) {
    def depth: Int = levels.length - 1
    /** The root, or None for an empty tree (all weights and the bias zero): the output is the constant 0. */
    def root: Option[Node] = levels.last.headOption
    def value: Bounds = root.map(r => if (r.neg) -r.mag else r.mag).getOrElse(Bounds(0, 0))
    /** Register bits when registered at `s`'s levels (a signal holds its magnitude interval, exactly wide). */
    def registerBits(s: StageSchedule): Int = (0 to s.depth).filter(s.registeredLevels).map { level =>
      levels(math.min(level, depth)).map(n => sintWidth(n.mag)).sum
    }.sum
  }

  def sintWidth(b: Bounds): Int = math.max((-b.lo - 1).bitLength, b.hi.bitLength) + 1

  def apply(terms: Seq[Term], bias: BigInt, in: Bounds): Plan = {
    var nextId = 0
    def fresh(): Int = { nextId += 1; nextId - 1 }
    val leaves: IndexedSeq[Node] =
      (terms.map(t => Leaf(fresh(), t, in << t.shift)) ++ (if (bias != 0) Seq(Const(fresh(), bias)) else Nil)).toIndexedSeq
    var levels = IndexedSeq(leaves)
    var adders = 0
    while (levels.last.length > 1) {
      val next = levels.last.grouped(2).map {
        case Seq(a, b) =>
          adders += 1
          (a.neg, b.neg) match {
            case (false, false) | (true, true) => Op(fresh(), a, Some(b), sub = false, a.mag + b.mag, a.neg)
            case (false, true)                 => Op(fresh(), a, Some(b), sub = true, a.mag - b.mag, neg = false)
            case (true, false)                 => Op(fresh(), b, Some(a), sub = true, b.mag - a.mag, neg = false)
          }
        case Seq(a) => a
      }.toIndexedSeq
      levels = levels :+ next
    }
    levels.last.headOption match {
      case Some(r) if r.neg =>
        adders += 1
        levels = levels :+ IndexedSeq(Op(fresh(), r, None, sub = true, -r.mag, neg = false))
      case _ =>
    }
    Plan(levels, adders)
  }
}

/** Where a layer's trees get pipeline registers: after every `levelsPerStage` adder levels and after the last. */
final case class StageSchedule(depth: Int, levelsPerStage: Int) {
  val registeredLevels: Set[Int] =
    if (depth == 0) Set(0) else ((levelsPerStage to depth by levelsPerStage) :+ depth).toSet
  def stages: Int = registeredLevels.size
}

/** One tree: `terms` index the tree's own inputs (only those it reads; the lane wires them). */
final case class ShiftAddTreeParams(terms: Seq[Term], bias: BigInt, nIn: Int, in: NumFmt, inBounds: Bounds,
                                    schedule: StageSchedule) {
  val plan: TreePlan.Plan = TreePlan(terms, bias, inBounds)
  require(plan.depth <= schedule.depth, s"tree depth ${plan.depth} exceeds the layer's ${schedule.depth}")
  val outWidth: Int = TreePlan.sintWidth(plan.value)
}

/** One output of a hard-wired Po2 dot product: an adder tree over +-(x << e) terms, no multiplier.
  * Registers (enabled by `en`) sit at the schedule's levels, so all trees of a layer have equal latency.
  */
class ShiftAddTree(val p: ShiftAddTreeParams) extends Module {
  override def desiredName: String =
    f"ShiftAddTree_t${p.terms.length}_d${p.plan.depth}_s${p.schedule.stages}_${ShiftAddTree.hash(p)}%08x"
  val io = IO(new Bundle {
    val en = Input(Bool())
    val x = Input(Vec(p.nIn, UInt(p.in.width.W)))
    val y = Output(SInt(p.outWidth.W))
  })
  import TreePlan._
  /** Cut to the interval's exact width (only where the operator's own width is wider). */
  private def fit(x: SInt, b: Bounds): SInt = {
    val w = sintWidth(b)
    if (x.getWidth == w) x else x(w - 1, 0).asSInt
  }
  private def widen(x: UInt): SInt = if (p.in.signed) x.asSInt else x.zext

  // every signal is exactly sintWidth(its node's magnitude) wide, registers included
  private val widthOf: Map[Int, Int] = p.plan.levels.flatten.map(n => n.id -> sintWidth(n.mag)).toMap
  private var sig: Map[Int, SInt] = Map.empty
  private def reg(level: Int): Unit =
    if (p.schedule.registeredLevels(level))
      sig = sig.map { case (id, s) => id -> RegEnable(s, 0.S(widthOf(id).W), io.en) }

  p.plan.levels.head.foreach {
    case l: Leaf  => sig += l.id -> fit(widen(io.x(l.term.index)) << l.term.shift, l.mag)
    case c: Const => sig += c.id -> c.mag.hi.S(sintWidth(c.mag).W)
    case other    => throw new IllegalStateException(s"unexpected leaf $other")
  }
  reg(0)
  for (level <- 1 to p.schedule.depth) {
    if (level <= p.plan.depth) p.plan.levels(level).foreach {
      case o: Op if !sig.contains(o.id) => // new at this level (pass-throughs are already in `sig`)
        val a = sig(o.a.id)
        val v = o.b match {
          case Some(b) if o.sub => a -& sig(b.id)
          case Some(b)          => a +& sig(b.id)
          case None             => 0.S -& a
        }
        sig += o.id -> fit(v, o.mag)
      case _ =>
    }
    // keep only the signals this level still holds (pass-throughs keep their id)
    val live = p.plan.levels(math.min(level, p.plan.depth)).map(_.id).toSet
    sig = sig.filter { case (id, _) => live(id) }
    reg(level)
  }
  io.y := p.plan.root.map(r => sig(r.id)).getOrElse(0.S)
}

object ShiftAddTree {
  def hash(p: ShiftAddTreeParams): Int =
    scala.util.hashing.MurmurHash3.stringHash(s"${p.terms};${p.bias};${p.nIn};${p.in};${p.inBounds};${p.schedule}")
  def apply(p: ShiftAddTreeParams, en: Bool, x: Seq[UInt]): SInt = {
    val t = Module(new ShiftAddTree(p))
    t.io.en := en
    t.io.x.zip(x).foreach { case (port, v) => port := v }
    t.io.y
  }
}

/** A layer of shift-add trees, one per output channel, over `nIn` inputs per pixel; `par` pixels per beat.
  * `channels(o)` = (terms over the pixel's nIn inputs, bias).
  */
final case class ShiftAddLayerParams(name: String, nIn: Int, in: NumFmt, inBounds: Bounds,
                                     channels: Seq[(Seq[Term], BigInt)], out: NumFmt, outBounds: Bounds,
                                     levelsPerStage: Int, par: Int = 1) {
  require(par >= 1, s"layer $name: parallelism must be >= 1, found $par")
  private val plans = channels.map { case (t, b) => TreePlan(t, b, inBounds) }
  val schedule: StageSchedule = StageSchedule(plans.map(_.depth).max, levelsPerStage)
  /** Per channel: the pixel inputs its tree reads (sorted) and the tree over just those. */
  val trees: Seq[(IndexedSeq[Int], ShiftAddTreeParams)] = channels.map { case (t, b) =>
    val inputs = t.map(_.index).distinct.sorted.toIndexedSeq
    val local = inputs.zipWithIndex.toMap
    (inputs, ShiftAddTreeParams(t.map(x => x.copy(index = local(x.index))), b, inputs.length, in, inBounds, schedule))
  }
  /** Adders of one pixel lane, and of the whole layer. */
  val laneAdders: Int = plans.map(_.adders).sum
  val adders: Int = laneAdders * par
  /** The exact output interval, from the weights and the input bounds. */
  val value: Bounds = plans.map(_.value).reduce(_ union _)
  /** Pipeline register bits of one lane (the trees' registers at the scheduled levels). */
  val laneRegisterBits: Int = plans.map(_.registerBits(schedule)).sum
}

/** The trees of one pixel: every output channel of the layer, with their inputs wired from the pixel's window. */
@instantiable
class ShiftAddLane(val p: ShiftAddLayerParams) extends Module {
  override def desiredName: String = s"ShiftAddLane_${p.name}_n${p.nIn}_o${p.channels.length}_s${p.schedule.stages}"
  @public val en = IO(Input(Bool()))
  @public val x = IO(Input(Vec(p.nIn, UInt(p.in.width.W))))
  @public val y = IO(Output(Vec(p.channels.length, UInt(p.out.width.W))))
  y := VecInit(p.trees.map { case (inputs, t) => ShiftAddTree(t, en, inputs.map(x(_))).pad(p.out.width)(p.out.width - 1, 0) })
}

/** A layer's worth of shift-add trees behind a stallable ready/valid pipeline: `par` lanes (one per pixel of a
  * beat), each an Instance of one lane Definition, so the Verilog holds the trees once however wide the unroll.
  */
class ShiftAddLayer(val p: ShiftAddLayerParams) extends Module {
  override def desiredName: String =
    s"ShiftAddLayer_${p.name}_n${p.nIn}_o${p.channels.length}_p${p.par}_s${p.schedule.stages}"
  val in = IO(Flipped(Decoupled(Vec(p.par * p.nIn, UInt(p.in.width.W)))))
  val out = IO(Decoupled(Vec(p.par * p.channels.length, UInt(p.out.width.W))))

  private val valid = RegInit(VecInit(Seq.fill(p.schedule.stages)(false.B)))
  private val en = !valid.last || out.ready
  in.ready := en
  when(en) {
    valid(0) := in.valid
    for (i <- 1 until p.schedule.stages) valid(i) := valid(i - 1)
  }
  out.valid := valid.last
  private val lane = Definition(new ShiftAddLane(p))
  private val o = p.channels.length
  for (q <- 0 until p.par) {
    val l = Instance(lane)
    l.en := en
    for (i <- 0 until p.nIn) l.x(i) := in.bits(q * p.nIn + i)
    for (c <- 0 until o) out.bits(q * o + c) := l.y(c)
  }
}

object ShiftAddLayer {
  def apply(p: ShiftAddLayerParams, in: DecoupledIO[Vec[UInt]]): DecoupledIO[Vec[UInt]] = {
    val m = Module(new ShiftAddLayer(p))
    m.in <> in
    m.out
  }
}
