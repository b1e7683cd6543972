package hashiflex

import chisel3._
import chisel3.util._
import chisel3.experimental.hierarchy.{instantiable, public, Definition, Instance}

import scala.collection.mutable

/** One term of a Po2 dot product: input `index`, shifted left by `shift`, added or (when `negative`) subtracted. */
final case class Term(index: Int, shift: Int, negative: Boolean)

object Term {
  /** The slots of one output channel from its weight codes (code c != 0: shift |c|-1, sign of c; 0: empty),
    * slot t reading input `offset + t`.
    */
  def slots(codes: Seq[Int], offset: Int = 0): IndexedSeq[Option[Term]] =
    codes.zipWithIndex.map { case (c, i) =>
      if (c == 0) None else Some(Term(offset + i, math.abs(c) - 1, c < 0))
    }.toIndexedSeq
}

object TreePlan {
  def sintWidth(b: Bounds): Int = math.max((-b.lo - 1).bitLength, b.hi.bitLength) + 1
}

/** The adder graph of one pixel lane: every output channel is a balanced tree over its input slots (pairs of
  * slots at each level; an empty slot, a zero weight, passes its partner through), and identical subtrees are
  * built once and shared across channels (common-subexpression elimination by hash-consing).
  *
  * A reference `Ref(node, shift, neg)` means +-(node << shift). A sum node is canonical: its operands are
  * ordered by (node, shift), the first is positive and the smaller shift is 0; the common shift and the first
  * operand's sign move up into the reference. So x0 + 2*x1 in one channel and -4*x0 - 8*x1 in another share one
  * adder. The root of channel o is then added to its bias (or negated when there is no bias), one adder at the
  * final level. Node ids: inputs 0 until nIn, sums nIn, nIn+1, ... in creation order (level, channel, pair), the
  * same order hashiflex.passes.shared_adder_graph follows, so Python predicts the same counts.
  */
object SharedPlan {
  final case class Ref(node: Int, shift: Int, neg: Boolean)
  final case class Sum(id: Int, a: Ref, b: Ref, level: Int)
  final case class Output(root: Option[Ref], bias: BigInt) {
    /** Whether the final level spends an adder: bias + root, bias - root, or 0 - root. */
    def adder: Boolean = root.exists(r => r.neg || bias != 0)
  }

  final case class Plan(nIn: Int, inBounds: Bounds, sums: IndexedSeq[Sum], outputs: IndexedSeq[Output],
                        levels: Int, liveAt: IndexedSeq[Set[Int]], unsharedAdders: Int) {
    /** Levels of logic: the pairing levels plus the final bias/negation level when any channel needs it. */
    val depth: Int = levels + (if (outputs.exists(_.adder)) 1 else 0)
    val adders: Int = sums.length + outputs.count(_.adder)
    private val vals: Array[Bounds] = {
      val v = Array.fill(nIn + sums.length)(inBounds)
      def term(r: Ref): Bounds = { val b = v(r.node) << r.shift; if (r.neg) -b else b }
      sums.foreach(s => v(s.id) = term(s.a) + term(s.b))
      v
    }
    def nodeValue(id: Int): Bounds = vals(id)
    def refValue(r: Ref): Bounds = { val b = vals(r.node) << r.shift; if (r.neg) -b else b }
    def outputValue(o: Output): Bounds = o.root.map(refValue(_) + Bounds(o.bias, o.bias)).getOrElse(Bounds(o.bias, o.bias))
    /** The exact output interval (each channel sums distinct inputs, so interval arithmetic is exact). */
    val value: Bounds = outputs.map(outputValue).reduce(_ union _)
    /** Bits of all adders (each as wide as its exact result): what an area model scales with. */
    def adderBits: Int = sums.map(x => TreePlan.sintWidth(nodeValue(x.id))).sum +
      outputs.filter(_.adder).map(o => TreePlan.sintWidth(outputValue(o))).sum
    /** Register bits when registered at `s`'s levels: shared nodes are registered once. */
    def registerBits(s: StageSchedule): Int = (0 to s.depth).filter(s.registeredLevels).map { level =>
      if (level > levels) outputs.map(o => TreePlan.sintWidth(outputValue(o))).sum
      else liveAt(level).toSeq.map(id => TreePlan.sintWidth(nodeValue(id))).sum
    }.sum
  }

  /** Adders of every channel summed on its own: its nonzero terms - 1, plus the final level when it has a bias or
    * only negative terms (hashiflex.passes.shared_adder_graph's share=False figure).
    */
  def unshared(channels: Seq[(IndexedSeq[Option[Term]], BigInt)]): Int = channels.map { case (slots, bias) =>
    val ts = slots.flatten
    math.max(ts.length - 1, 0) + (if (ts.nonEmpty && (bias != 0 || ts.forall(_.negative))) 1 else 0)
  }.sum

  /** The plan design.json carries (hashiflex.adders, checked against the weights by [[Design]]): each sum at the
    * level one above its later operand (as soon as its operands are ready); a node stays live (and is
    * registered at scheduled levels) until its last consumer's level, a root until the end.
    */
  def planned(nIn: Int, inBounds: Bounds, channels: Seq[(IndexedSeq[Option[Term]], BigInt)], spec: AdderPlanSpec): Plan = {
    require(spec.roots.length == channels.length, s"the plan has ${spec.roots.length} roots for ${channels.length} channels")
    val n = nIn + spec.sums.length
    val lv = Array.fill(n)(0)
    val sums = spec.sums.zipWithIndex.map { case ((a, b), j) =>
      require(a.node < nIn + j && b.node < nIn + j && !a.neg, s"sum $j: operands must be earlier nodes, the first positive")
      lv(nIn + j) = math.max(lv(a.node), lv(b.node)) + 1
      Sum(nIn + j, a, b, lv(nIn + j))
    }
    val levels = spec.roots.flatten.map(r => lv(r.node)).maxOption.getOrElse(0)
    val lastUse = Array.fill(n)(-1)
    for (s <- sums; r <- Seq(s.a, s.b)) lastUse(r.node) = math.max(lastUse(r.node), s.level)
    for (r <- spec.roots.flatten) lastUse(r.node) = levels + 1
    val live = (0 to levels).map(l => (0 until n).filter(id => lv(id) <= l && lastUse(id) > l).toSet)
    val outputs = spec.roots.zip(channels).map { case (r, (_, bias)) => Output(r, bias) }
    Plan(nIn, inBounds, sums, outputs, levels, live, unshared(channels))
  }

  /** Balanced trees over the slots (slot 2j with 2j+1 at every level), identical subtrees hash-consed: the plan of
    * layers built without design.json (the ScalaTest specs); design.json always carries a [[planned]] plan.
    */
  def apply(nIn: Int, inBounds: Bounds, channels: Seq[(IndexedSeq[Option[Term]], BigInt)], share: Boolean = true): Plan = {
    val memo = mutable.HashMap.empty[(Ref, Ref), Int]
    val sums = mutable.ArrayBuffer.empty[Sum]
    var slots: IndexedSeq[IndexedSeq[Option[Ref]]] =
      channels.map(_._1.map(_.map(t => Ref(t.index, t.shift, t.negative)))).toIndexedSeq
    val live = mutable.ArrayBuffer(slots.flatten.flatten.map(_.node).toSet)
    var level = 0
    var unshared = 0
    while (slots.exists(_.length > 1)) {
      level += 1
      slots = slots.map(_.grouped(2).map {
        case Seq(Some(x), Some(y)) =>
          unshared += 1
          val Seq(f, g) = Seq(x, y).sortBy(r => (r.node, r.shift))
          val base = math.min(f.shift, g.shift)
          val key = (Ref(f.node, f.shift - base, neg = false), Ref(g.node, g.shift - base, g.neg != f.neg))
          def newSum(): Int = { sums += Sum(nIn + sums.length, key._1, key._2, level); sums.last.id }
          val id = if (share) memo.getOrElseUpdate(key, newSum()) else newSum()
          Some(Ref(id, base, f.neg))
        case Seq(x, None) => x
        case Seq(None, y) => y
        case Seq(x)       => x
      }.toIndexedSeq)
      live += slots.flatten.flatten.map(_.node).toSet
    }
    val outputs = slots.zip(channels).map { case (s, (_, bias)) => Output(s.headOption.flatten, bias) }
    Plan(nIn, inBounds, sums.toIndexedSeq, outputs, level, live.toIndexedSeq,
      unshared + outputs.count(_.adder))
  }
}

/** Where a layer's adder graph gets pipeline registers: at its inputs, after every `levelsPerStage` levels and
  * after the last. The input register makes every path into the tree start at a flip-flop of its own: what feeds
  * it (a line buffer's window multiplexers, a requantizer, a residual add, all combinational on the stream) then
  * ends there, and no path runs through the logic of two modules into the first adders (measured without it on
  * the digits design: 1.50 ns from a line buffer's ring through the window mux into the lane's first stage, against
  * 0.99 ns for the slowest module alone). hashiflex.ops.base.pipeline_stages states the same count. */
final case class StageSchedule(depth: Int, levelsPerStage: Int) {
  val registeredLevels: Set[Int] =
    if (depth == 0) Set(0) else ((levelsPerStage to depth by levelsPerStage) :+ depth :+ 0).toSet
  def stages: Int = registeredLevels.size
}

/** A layer of shift-add trees, one per output channel, over `nIn` inputs per pixel; `par` pixels per beat.
  * `channels(o)` = (the channel's input slots, bias); `share`: build common subtrees once (CSE).
  */
final case class ShiftAddLayerParams(name: String, nIn: Int, in: NumFmt, inBounds: Bounds,
                                     channels: Seq[(IndexedSeq[Option[Term]], BigInt)], out: NumFmt, outBounds: Bounds,
                                     levelsPerStage: Int, par: Int = 1, share: Boolean = true,
                                     planned: Option[AdderPlanSpec] = None) {
  require(par >= 1, s"layer $name: parallelism must be >= 1, found $par")
  val plan: SharedPlan.Plan =
    planned.map(SharedPlan.planned(nIn, inBounds, channels, _)).getOrElse(SharedPlan(nIn, inBounds, channels, share))
  val schedule: StageSchedule = StageSchedule(plan.depth, levelsPerStage)
  /** Adders of one pixel lane and of the whole layer, with sharing and without. */
  val laneAdders: Int = plan.adders
  val adders: Int = laneAdders * par
  val addersUnshared: Int = plan.unsharedAdders * par
  /** The exact output interval, from the weights and the input bounds: per channel, each input's weight (the sum
    * of its terms) times the input interval, plus the bias. With one term per weight every input appears once in
    * the tree and this equals the plan's interval arithmetic; with more, the plan's node intervals (which size the
    * wires) can be wider, never narrower.
    */
  val value: Bounds = channels.map { case (slots, bias) =>
    val w = slots.flatten.groupMapReduce(_.index)(t => if (t.negative) -(BigInt(1) << t.shift) else BigInt(1) << t.shift)(_ + _)
    w.values.foldLeft(Bounds(bias, bias)) { (acc, wi) =>
      acc + (if (wi >= 0) Bounds(inBounds.lo * wi, inBounds.hi * wi) else Bounds(inBounds.hi * wi, inBounds.lo * wi))
    }
  }.reduce(_ union _)
  /** Pipeline register bits of the whole layer (all lanes). */
  val registerBits: Int = plan.registerBits(schedule) * par
  /** Adder bits of the whole layer (all lanes). */
  val adderBits: Int = plan.adderBits * par
}

/** The adder graph of one pixel: every output channel of the layer, shared subtrees built once. Registers
  * (enabled by `en`) sit at the schedule's levels, so every output has the same latency. No multiplier: each
  * weight is a shift of its input, its sign folded into an add or a subtract.
  */
@instantiable
class ShiftAddLane(val p: ShiftAddLayerParams) extends Module {
  override def desiredName: String =
    f"ShiftAddLane_${p.name}_n${p.nIn}_o${p.channels.length}_s${p.schedule.stages}_${ShiftAddLane.hash(p)}%08x"
  @public val en = IO(Input(Bool()))
  @public val x = IO(Input(Vec(p.nIn, UInt(p.in.width.W))))
  @public val y = IO(Output(Vec(p.channels.length, UInt(p.out.width.W))))
  import SharedPlan._
  private val plan = p.plan
  private def fit(v: SInt, b: Bounds): SInt = {
    val w = TreePlan.sintWidth(b)
    if (v.getWidth == w) v else v(w - 1, 0).asSInt
  }
  private def shifted(s: SInt, r: Ref): SInt = if (r.shift == 0) s else s << r.shift

  private val sig = mutable.HashMap.empty[Int, SInt]
  private def reg(level: Int): Unit = if (p.schedule.registeredLevels(level) && level <= plan.levels)
    for (id <- plan.liveAt(level)) sig(id) = RegEnable(sig(id), 0.S(TreePlan.sintWidth(plan.nodeValue(id)).W), en)

  for (id <- plan.liveAt(0)) sig(id) = fit(Requantize.widen(x(id), p.in), plan.nodeValue(id))
  reg(0)
  private val byLevel = plan.sums.groupBy(_.level)
  for (level <- 1 to plan.levels) {
    for (s <- byLevel.getOrElse(level, Nil)) {
      val a = shifted(sig(s.a.node), s.a)
      val b = shifted(sig(s.b.node), s.b)
      sig(s.id) = fit(if (s.b.neg) a -& b else a +& b, plan.nodeValue(s.id))
    }
    sig.filterInPlace { case (id, _) => plan.liveAt(level)(id) }
    reg(level)
  }
  private val outs = plan.outputs.map { o =>
    val b = o.bias.S(TreePlan.sintWidth(Bounds(o.bias, o.bias)).W)
    val v = o.root match {
      case None                          => b
      case Some(r) if !o.adder           => shifted(sig(r.node), r)
      case Some(r) if r.neg              => b -& shifted(sig(r.node), r)
      case Some(r)                       => shifted(sig(r.node), r) +& b
    }
    fit(v, plan.outputValue(o))
  }
  // the final level, when there is one, is registered like any other scheduled level
  private val regd =
    if (plan.depth > plan.levels && p.schedule.registeredLevels(plan.depth))
      outs.zip(plan.outputs).map { case (v, o) => RegEnable(v, 0.S(TreePlan.sintWidth(plan.outputValue(o)).W), en) }
    else outs
  y := VecInit(regd.map(v => v.pad(p.out.width)(p.out.width - 1, 0)))
}

object ShiftAddLane {
  def hash(p: ShiftAddLayerParams): Int =
    scala.util.hashing.MurmurHash3.stringHash(s"${p.channels};${p.nIn};${p.in};${p.inBounds};${p.schedule};${p.share};${p.planned}")
}

/** The ready/valid control of a layer with `stages` register stages (adder trees, comparator trees): a valid bit
  * per stage; every stage advances when the last one is empty or taken. Returns the enable of the stage registers.
  */
object StallablePipeline {
  def apply(stages: Int, in: DecoupledIO[_ <: Data], out: DecoupledIO[_ <: Data]): Bool = {
    val valid = RegInit(VecInit(Seq.fill(stages)(false.B)))
    val en = !valid.last || out.ready
    in.ready := en
    when(en) {
      valid(0) := in.valid
      for (i <- 1 until stages) valid(i) := valid(i - 1)
    }
    out.valid := valid.last
    en
  }
}

/** A layer's worth of shift-add trees behind a stallable ready/valid pipeline: `par` lanes (one per pixel of a
  * beat), each an Instance of one lane Definition, so the Verilog holds the adder graph once however wide the
  * unroll.
  */
class ShiftAddLayer(val p: ShiftAddLayerParams) extends Module {
  override def desiredName: String =
    s"ShiftAddLayer_${p.name}_n${p.nIn}_o${p.channels.length}_p${p.par}_s${p.schedule.stages}"
  val in = IO(Flipped(Decoupled(Vec(p.par * p.nIn, UInt(p.in.width.W)))))
  val out = IO(Decoupled(Vec(p.par * p.channels.length, UInt(p.out.width.W))))
  import ModuleTable._
  ModuleTable.record(desiredName, "adder_layer", "lanes" -> p.par, "adders" -> p.adders, "adder_bits" -> p.adderBits,
    "register_bits" -> p.registerBits, "stages" -> p.schedule.stages, "inputs" -> p.nIn, "outputs" -> p.channels.length)

  private val en = StallablePipeline(p.schedule.stages, in, out)
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
    val m = Module(new ShiftAddLayer(p)).suggestName(p.name)
    m.in <> in
    m.out
  }
}
