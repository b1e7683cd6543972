package hashiflex

import chisel3._
import chisel3.util._

final case class WindowParams(channels: Int, height: Int, width: Int, kernel: Int, stride: Int, padding: Int,
                              bits: Int) {
  val outH: Int = (height + 2 * padding - kernel) / stride + 1
  val outW: Int = (width + 2 * padding - kernel) / stride + 1
  /** Row buffer depth: k rows for the window plus `stride` so input keeps streaming while a row is emitted. */
  val rows: Int = kernel + stride
  /** Index of the first input row kept for output row oy (rows above it are no longer needed). */
  def headRow(oy: Int): Int = math.max(0, oy * stride - padding)
  /** Input rows that must be complete (counted from headRow) before output row oy can be emitted. */
  def need(oy: Int): Int = math.min(oy * stride - padding + kernel - 1, height - 1) - headRow(oy) + 1
  /** Rows released after output row oy: up to the next row's head, or the rest of the image after the last. */
  def pop(oy: Int): Int = if (oy < outH - 1) headRow(oy + 1) - headRow(oy) else height - headRow(oy)
}

/** Line buffer turning a raster stream of pixels (all channels per beat) into a stream of k x k windows,
  * with zero padding and stride, one window per beat. Window element order is (channel, row, column), the
  * same as a flattened OIHW weight row. Rows are held in a ring of `rows` slots; input stalls only when the
  * ring is full, so images stream back to back.
  */
class WindowGen(val p: WindowParams) extends Module {
  override def desiredName: String =
    s"WindowGen_c${p.channels}_${p.height}x${p.width}_k${p.kernel}s${p.stride}p${p.padding}_b${p.bits}"
  val in = IO(Flipped(Decoupled(Vec(p.channels, UInt(p.bits.W)))))
  val out = IO(Decoupled(Vec(p.channels * p.kernel * p.kernel, UInt(p.bits.W))))

  private val R = p.rows
  private val buf = Reg(Vec(R, Vec(p.width, UInt((p.channels * p.bits).W))))
  private val count = RegInit(0.U(log2Ceil(R + 1).W))     // complete rows held, from the head slot
  private val head = RegInit(0.U(log2Ceil(R).W))          // ring slot of headRow(oy)
  private val inCol = RegInit(0.U(log2Ceil(p.width).W))
  private val oy = RegInit(0.U(log2Ceil(p.outH).W))
  private val ox = RegInit(0.U(log2Ceil(p.outW).W))

  private def table(xs: Seq[Int], w: Int): Vec[UInt] = VecInit(xs.map(_.U(w.W)))
  private def wrap(x: UInt): UInt = Mux(x >= R.U, x - R.U, x)(log2Ceil(R) - 1, 0)
  private val cw = log2Ceil(R + 1) + 1
  private val needT = table((0 until p.outH).map(p.need), cw)
  private val needLastT = table((0 until p.outH).map(o => math.max(p.need(o), p.pop(o))), cw)
  private val popT = table((0 until p.outH).map(p.pop), cw)

  // input side: write into the slot after the committed rows
  private val wSlot = wrap(head +& count)
  in.ready := count < R.U
  private val commit = in.fire && inCol === (p.width - 1).U
  when(in.fire) {
    buf(wSlot)(inCol) := in.bits.asUInt
    inCol := Mux(inCol === (p.width - 1).U, 0.U, inCol + 1.U)
  }

  // output side
  private val lastCol = ox === (p.outW - 1).U
  out.valid := count >= Mux(lastCol, needLastT(oy), needT(oy))
  private val window = for (c <- 0 until p.channels; i <- 0 until p.kernel; j <- 0 until p.kernel) yield {
    // input row of window row i relative to the head: oy*s - p + i - headRow(oy); invalid rows are padding
    val rowOff = (0 until p.outH).map(o => o * p.stride - p.padding + i - p.headRow(o))
    val rowOk = (0 until p.outH).map(o => { val r = o * p.stride - p.padding + i; r >= 0 && r < p.height })
    val col = (0 until p.outW).map(o => o * p.stride - p.padding + j)
    val colOk = col.map(x => x >= 0 && x < p.width)
    val slot = wrap(head +& table(rowOff.map(math.max(0, _)), log2Ceil(R + 1))(oy))
    val colIdx = table(col.map(x => math.min(math.max(0, x), p.width - 1)), log2Ceil(p.width))(ox)
    val ok = VecInit(rowOk.map(_.B))(oy) && VecInit(colOk.map(_.B))(ox)
    val pix = buf(slot)(colIdx)
    Mux(ok, pix((c + 1) * p.bits - 1, c * p.bits), 0.U)
  }
  out.bits := VecInit(window)

  private val popNow = Mux(out.fire && lastCol, popT(oy), 0.U)
  when(out.fire) {
    ox := Mux(lastCol, 0.U, ox + 1.U)
    when(lastCol) { oy := Mux(oy === (p.outH - 1).U, 0.U, oy + 1.U) }
    head := wrap(head +& popNow)
  }
  count := count + commit.asUInt - popNow
}

object WindowGen {
  def apply(p: WindowParams, in: DecoupledIO[Vec[UInt]]): DecoupledIO[Vec[UInt]] = {
    val m = Module(new WindowGen(p))
    m.in <> in
    m.out
  }
}
