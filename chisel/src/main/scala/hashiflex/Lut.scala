package hashiflex

import chisel3._
import chisel3.util._

/** lut (hashiflex/ops/lut.py): an activation (Hardswish, SiLU, Sigmoid, ...) as an exact integer lookup on the
  * quantized input, no multiplier: entry i is the output for input in_bounds.lo + i. Python computes the table;
  * the generator checks its length (one entry per input value) and that the output bounds are its extremes.
  */
final case class LutSpec(c: Common, table: IndexedSeq[BigInt]) extends LayerSpec {
  val op = "lut"
  def plan(ctx: PlanCtx): LayerHw = {
    ctx.expectBounds(Bounds(table.min, table.max), "the table's smallest and largest entries")
    ctx.hw(0, 0)
  }
  def build(ctx: BuildCtx, x: DecoupledIO[Vec[UInt]]): DecoupledIO[Vec[UInt]] = {
    val m = Module(new Lut(LutParams(inShape.c * par, ctx.fmt, inBounds.lo, table, outFmt))).suggestName(name)
    m.in <> x
    m.out
  }
}

object LutSpec {
  val MaxEntries: Int = 1 << 12

  private[hashiflex] def parse(p: LayerParse): LutSpec = {
    val n = p.input.bounds.hi - p.input.bounds.lo + 1
    val tC = p.l.field("table")
    if (n > MaxEntries)
      throw DesignError(s"${tC.path}: a lookup table is built for at most $MaxEntries input values, found in_bounds ${p.input.bounds} ($n)")
    val table = tC.arrOf(n.toInt).map(_.bigint)
    p.expectShape(p.input.shape)
    p.samePar("a lookup maps pixels one to one")
    LutSpec(p.common, table)
  }
}

final case class LutParams(lanes: Int, in: NumFmt, lo: BigInt, table: IndexedSeq[BigInt], out: NumFmt) {
  /** A stable name for equal tables (the Verilog holds each distinct table once). */
  def hash: Int = scala.util.hashing.MurmurHash3.stringHash(s"$in;$lo;${table.mkString(",")};$out")
}

/** The table on every lane of a beat, combinational on the stream (ready/valid pass through). */
class Lut(val p: LutParams) extends Module {
  override def desiredName: String =
    f"Lut_l${p.lanes}_n${p.table.length}_i${p.in.width}${if (p.in.signed) "s" else "u"}_o${p.out.width}_${p.hash}%08x"
  val in = IO(Flipped(Decoupled(Vec(p.lanes, UInt(p.in.width.W)))))
  val out = IO(Decoupled(Vec(p.lanes, UInt(p.out.width.W))))
  import ModuleTable._
  ModuleTable.record(desiredName, "lut", "lanes" -> p.lanes, "entries" -> p.table.length, "in_width" -> p.in.width,
    "out_width" -> p.out.width)
  in.ready := out.ready
  out.valid := in.valid
  private def raw(v: BigInt): UInt = (if (v < 0) v + (BigInt(1) << p.out.width) else v).U(p.out.width.W)
  private val entries = p.table.map(raw)
  private val idxBits = log2Ceil(p.table.length)
  /** A binary mux tree over the index bits (no array: the same logic whatever array lowering firtool picks);
    * indices past the table, which the input's bounds never give, read its last entry. */
  private def select(idx: UInt, first: Int, bit: Int): UInt =
    if (first >= entries.length) entries.last
    else if (bit < 0) entries(first)
    else Mux(idx(bit), select(idx, first + (1 << bit), bit - 1), select(idx, first, bit - 1))
  out.bits := VecInit(in.bits.map { x =>
    if (p.table.length == 1) entries.head
    else {
      val idx = Requantize.widen(x, p.in) -& p.lo.S((p.lo.bitLength + 1).W) // in [0, entries): the input's bounds
      select(idx.asUInt(idxBits - 1, 0), 0, idxBits - 1)
    }
  })
}
