package hashiflex

import chisel3._
import chisel3.util._

/** The programmable NPU that runs the classification layer on the backbone's vector (design.json `npu`; see
  * hashiflex/npu.py for the arithmetic and the load image, which this file implements word for word).
  *
  * `lanes` outputs in parallel, each a dot product over `width` inputs per cycle: an image takes
  * tiles * chunks = ceil(capacity / lanes) * ceil(inFeatures / width) cycles. Weights live in a two-bank memory
  * (the active bank serves, the other one takes a new image from the load port and becomes active between two
  * images once the image is complete and valid); biases and the runtime configuration are banked the same way.
  */
final case class NpuSpec(inFeatures: Int, inFmt: NumFmt, capacity: Int, lanes: Int, width: Int, weightBits: Int,
                         biasBits: Int, accWidth: Int, outBits: Int, maxShift: Int, topK: Int, scan: Int) {
  def tiles: Int = (capacity + lanes - 1) / lanes
  def chunks: Int = (inFeatures + width - 1) / width
  /** Cycles of the MAC schedule for one image. */
  def schedule: Int = tiles * chunks
  def macs: Int = lanes * width
  /** Cycles per image. Two logits buffers alternate, so image n + 2 may start once image n's buffer has been
    * scanned and sent: s(n+2) >= s(n) + schedule + scanSteps + ScanOverhead, besides s(n+1) >= s(n) + schedule.
    * Starts are spaced evenly at this many cycles (a throttle when the scan, not the MACs, sets the pace). */
  def cyclesPerImage: Int =
    math.max(schedule, (schedule + (capacity + scan - 1) / scan + NpuSpec.ScanOverhead + 1) / 2)
  def shiftBits: Int = math.max(1, BigInt(maxShift).bitLength)
  def indexBits: Int = math.max(1, BigInt(capacity - 1).bitLength)
  def moduleName: String =
    s"Npu_i${inFeatures}_o${capacity}_l${lanes}_w${width}_wb${weightBits}_a${accWidth}_k${topK}_s${scan}"
  /** Weight memory (both banks) and bias registers (both banks), in bits. */
  def memoryBits: Long = 2L * schedule * macs * weightBits + 2L * capacity * biasBits
}

object NpuSpec {
  /** Cycles from an image's last issue to its logits buffer being free, beyond the ceil(capacity / scan) top-k
    * steps: memory, products, partial sums, dot product, accumulate and rounding add (6), output beat (1), free
    * seen by the issue stage (1) (hashiflex.npu.SCAN_OVERHEAD). */
  val ScanOverhead = 8
  /** Products summed per partial sum in the dot product's first register stage. */
  val PartialTerms = 8

  /** The accumulator width: any sum of inFeatures products of a `bits`-wide weight and an input in `in`, plus a
    * bias, signed (hashiflex.npu.NpuConfig.acc_width). */
  def accWidthFor(inFeatures: Int, in: Bounds, weightBits: Int, biasBits: Int): Int = {
    val m = in.lo.abs.max(in.hi.abs)
    val b = m * inFeatures * (BigInt(1) << (weightBits - 1)) + (BigInt(1) << (biasBits - 1))
    NumFmt.forBounds(Bounds(-b, b)).width
  }
}

/** The load port's status codes (hashiflex.npu.Status; hw_params.json carries this table and Python checks it). */
object NpuStatus {
  val Empty = 0; val Ok = 1; val Loading = 2; val BadMagic = 3; val BadVersion = 4; val BadBits = 5
  val BadShape = 6; val BadShift = 7; val BadValue = 8; val TooShort = 9; val TooLong = 10; val BadChecksum = 11
  val table: Seq[(String, Int)] = Seq("EMPTY" -> Empty, "OK" -> Ok, "LOADING" -> Loading, "BAD_MAGIC" -> BadMagic,
    "BAD_VERSION" -> BadVersion, "BAD_BITS" -> BadBits, "BAD_SHAPE" -> BadShape, "BAD_SHIFT" -> BadShift,
    "BAD_VALUE" -> BadValue, "TOO_SHORT" -> TooShort, "TOO_LONG" -> TooLong, "BAD_CHECKSUM" -> BadChecksum)
  val Magic: Long = 0x48464E31L // "HFN1"
  val ImageVersion = 1
  val HeaderWords = 5
}

/** CRC-32 (IEEE 802.3, reflected, as zlib.crc32) of 32-bit words taken as little-endian bytes. */
object Crc32 {
  val Poly: Long = 0xEDB88320L
  val Init: Long = 0xFFFFFFFFL

  /** The register after one more word: 32 bit-serial steps, unrolled (an XOR network after synthesis). */
  def step(crc: UInt, word: UInt): UInt =
    (0 until 32).foldLeft(crc) { (c, b) =>
      val fb = c(0) ^ word(b)
      (c >> 1) ^ Mux(fb, Poly.U(32.W), 0.U(32.W))
    }

  /** The same in software (for tests): the CRC of `words`, final XOR applied. */
  def of(words: Seq[Long]): Long = {
    var c = Init
    for (w <- words; b <- 0 until 32) {
      val fb = (c ^ (w >>> b)) & 1L
      c = (c >>> 1) ^ (if (fb == 1L) Poly else 0L)
    }
    c ^ 0xFFFFFFFFL
  }
}

class LoadWord extends Bundle {
  val data = UInt(32.W)
  val last = Bool()
}

class NpuStatusPort extends Bundle {
  val code = UInt(4.W)
  val tag = UInt(32.W)
}

/** One result beat per image: all `capacity` logits (outputs beyond the loaded head's are 0) and the top-k indices. */
class NpuResult(p: NpuSpec) extends Bundle {
  val logits = Vec(p.capacity, UInt(p.outBits.W))
  val topk = Vec(p.topK, UInt(p.indexBits.W))
}

/** Parses load images (hashiflex.npu.encode): checks header, value ranges, length and CRC word by word, writes
  * weights and biases through to the shadow bank, and pulses `commit` when the image is complete and valid. The
  * first error ends the image (the rest is drained up to `last`) and becomes the status code.
  */
class NpuLoader(val p: NpuSpec) extends Module {
  override def desiredName: String = s"NpuLoader_i${p.inFeatures}_o${p.capacity}_l${p.lanes}_w${p.width}"
  import ModuleTable._
  ModuleTable.record(desiredName, "npu_loader", "in_features" -> p.inFeatures, "capacity" -> p.capacity,
    "macs" -> p.macs, "schedule" -> p.schedule)
  private val addrBits = math.max(1, BigInt(p.schedule - 1).bitLength)
  val io = IO(new Bundle {
    val in = Flipped(Decoupled(new LoadWord))
    /** A new image may begin (the shadow bank is not in use and no commit is waiting for its swap). */
    val allowStart = Input(Bool())
    val weight = Valid(new Bundle {
      val addr = UInt(addrBits.W)
      val elem = UInt(math.max(1, BigInt(p.macs - 1).bitLength).W)
      val value = SInt(p.weightBits.W)
    })
    val bias = Valid(new Bundle {
      val index = UInt(p.indexBits.W)
      val value = SInt(p.biasBits.W)
    })
    val commit = Valid(new Bundle {
      val outFeatures = UInt(16.W)
      val shift = UInt(p.shiftBits.W)
      val tag = UInt(32.W)
    })
    val code = Output(UInt(4.W))
  })
  import NpuStatus._
  private object S extends ChiselEnum { val idle, header, weights, biases, crcWord, drain = Value }
  private val state = RegInit(S.idle)
  private val code = RegInit(Empty.U(4.W))
  private val err = RegInit(0.U(4.W))
  private val hdr = RegInit(0.U(3.W))
  private val crc = RegInit(Crc32.Init.U(32.W))
  private val outF = RegInit(0.U(16.W))
  private val shift = RegInit(0.U(p.shiftBits.W))
  private val tag = RegInit(0.U(32.W))
  // weight position: input i = j * width + k, output o = t * lanes + l; rowBase = t * chunks
  private val i = RegInit(0.U(17.W)); private val k = RegInit(0.U(17.W)); private val j = RegInit(0.U(addrBits.W))
  private val o = RegInit(0.U(17.W)); private val l = RegInit(0.U(17.W)); private val rowBase = RegInit(0.U(addrBits.W))

  io.in.ready := state =/= S.idle || io.allowStart
  io.code := code
  io.weight.valid := false.B
  io.weight.bits.addr := rowBase + j
  io.weight.bits.elem := (l * p.width.U + k)(io.weight.bits.elem.getWidth - 1, 0)
  io.weight.bits.value := io.in.bits.data(p.weightBits - 1, 0).asSInt
  io.bias.valid := false.B
  io.bias.bits.index := o(p.indexBits - 1, 0)
  io.bias.bits.value := io.in.bits.data(p.biasBits - 1, 0).asSInt
  io.commit.valid := false.B
  io.commit.bits.outFeatures := outF
  io.commit.bits.shift := shift
  io.commit.bits.tag := tag

  private val w = io.in.bits.data
  private val last = io.in.bits.last
  /** The 32-bit word is a sign extension of its low `bits` bits. */
  private def fits(bits: Int): Bool = if (bits >= 32) true.B else {
    val top = w(31, bits - 1)
    top.andR || !top.orR
  }
  private def finish(c: UInt): Unit = { code := c; state := S.idle }
  /** An error at this word: the image ends (now, or at `last` after draining). */
  private def fail(c: UInt): Unit = when(last) { finish(c) }.otherwise { err := c; state := S.drain }
  /** A good word that is not the image's last one. */
  private def next(s: S.Type): Unit = when(last) { finish(TooShort.U) }.otherwise { state := s }

  when(io.in.fire) {
    crc := Crc32.step(Mux(state === S.idle, Crc32.Init.U(32.W), crc), w)
    switch(state) {
      is(S.idle) {
        code := Loading.U
        hdr := 1.U
        when(w =/= Magic.U) { fail(BadMagic.U) }.otherwise { next(S.header) }
      }
      is(S.header) {
        hdr := hdr + 1.U
        switch(hdr) {
          is(1.U) {
            when(w(31, 16) =/= ImageVersion.U) { fail(BadVersion.U) }
              .elsewhen(w(15, 8) =/= p.weightBits.U || w(7, 0) =/= p.biasBits.U) { fail(BadBits.U) }
              .otherwise { next(S.header) }
          }
          is(2.U) {
            outF := w(15, 0)
            when(w(31, 16) =/= p.inFeatures.U || w(15, 0) < p.topK.max(1).U || w(15, 0) > p.capacity.U) {
              fail(BadShape.U)
            }.otherwise { next(S.header) }
          }
          is(3.U) {
            shift := w(p.shiftBits - 1, 0)
            when(w > p.maxShift.U) { fail(BadShift.U) }.otherwise { next(S.header) }
          }
          is(4.U) {
            tag := w
            i := 0.U; k := 0.U; j := 0.U; o := 0.U; l := 0.U; rowBase := 0.U
            next(S.weights)
          }
        }
      }
      is(S.weights) {
        when(!fits(p.weightBits)) { fail(BadValue.U) }.otherwise {
          io.weight.valid := true.B
          val rowEnd = i === (p.inFeatures - 1).U
          val chunkEnd = k === (p.width - 1).U || rowEnd
          i := Mux(rowEnd, 0.U, i + 1.U)
          k := Mux(chunkEnd, 0.U, k + 1.U)
          j := Mux(rowEnd, 0.U, Mux(chunkEnd, j + 1.U, j))
          when(rowEnd) {
            val laneEnd = l === (p.lanes - 1).U
            o := Mux(o === outF - 1.U, 0.U, o + 1.U)
            l := Mux(laneEnd, 0.U, l + 1.U)
            when(laneEnd) { rowBase := rowBase + p.chunks.U }
          }
          next(Mux(rowEnd && o === outF - 1.U, S.biases, S.weights))
        }
      }
      is(S.biases) {
        when(!fits(p.biasBits)) { fail(BadValue.U) }.otherwise {
          io.bias.valid := true.B
          o := o + 1.U
          next(Mux(o === outF - 1.U, S.crcWord, S.biases))
        }
      }
      is(S.crcWord) {
        when(!last) { fail(TooLong.U) }
          .elsewhen(w =/= ~crc) { finish(BadChecksum.U) }
          .otherwise { io.commit.valid := true.B; finish(Ok.U) }
      }
      is(S.drain) { when(last) { finish(err) } }
    }
  }
}

/** Inserts `n` candidates (value, index; in increasing index order) into a list sorted by value, largest first;
  * a candidate goes behind every entry at least as large, so ties keep the lower index first (a stable sort). */
object TopK {
  final class Entry(valueBits: Int, indexBits: Int) extends Bundle {
    val valid = Bool()
    val value = SInt(valueBits.W)
    val index = UInt(indexBits.W)
  }

  def insert(list: Seq[Entry], cand: Entry): Seq[Entry] = {
    // ahead(e): the entry stays in front of the candidate
    val ahead = list.map(e => e.valid && (!cand.valid || e.value >= cand.value))
    list.indices.map { q =>
      val prevAhead = if (q == 0) true.B else ahead(q - 1)
      Mux(ahead(q), list(q), Mux(prevAhead, cand, list(q - 1 max 0)))
    }
  }
}

/** The NPU's two weight banks: `depth` words of `macs` weights, written one weight at a time (a write mask per
  * weight), read a whole word per cycle one cycle after the address (an SRAM macro in silicon; a module of its
  * own so the area model and the synthesis flow can tell it from logic: kind "memory" in the module table). */
class NpuWeightMemory(depth: Int, macs: Int, weightBits: Int) extends Module {
  override def desiredName: String = s"NpuWeightMemory_d${depth}_m${macs}_b$weightBits"
  import ModuleTable._
  ModuleTable.record(desiredName, "memory", "depth" -> depth, "width" -> macs * weightBits, "write_mask_lanes" -> macs)
  private val addrBits = math.max(1, BigInt(depth - 1).bitLength)
  val io = IO(new Bundle {
    val ren = Input(Bool()); val raddr = Input(UInt(addrBits.W)); val rdata = Output(Vec(macs, SInt(weightBits.W)))
    val wen = Input(Bool()); val waddr = Input(UInt(addrBits.W)); val wdata = Input(SInt(weightBits.W))
    val wmask = Input(Vec(macs, Bool()))
  })
  private val mem = SyncReadMem(depth, Vec(macs, SInt(weightBits.W)))
  when(io.wen) { mem.write(io.waddr, VecInit(Seq.fill(macs)(io.wdata)), io.wmask) }
  io.rdata := mem.read(io.raddr, io.ren)

  // the driving side, called from the parent's body: `idle` first, then `write` under a condition and `read`
  private def fit(a: UInt): UInt = a.pad(addrBits)(addrBits - 1, 0)
  def idle(): Unit = {
    io.wen := false.B; io.waddr := DontCare; io.wdata := DontCare; io.wmask := DontCare
    io.ren := false.B; io.raddr := DontCare
  }
  def write(addr: UInt, value: SInt, mask: Seq[Bool]): Unit = {
    io.wen := true.B; io.waddr := fit(addr); io.wdata := value; io.wmask := VecInit(mask)
  }
  def read(addr: UInt, en: Bool): Vec[SInt] = { io.raddr := fit(addr); io.ren := en; io.rdata }
}

/** Where a word of the NPU's MAC schedule is in its image: tile, chunk, the image's last word, its logits buffer and
  * its weight bank (carried from stage to stage beside the word's data). */
class NpuTag(tBits: Int, jBits: Int) extends Bundle {
  val t = UInt(tBits.W)
  val j = UInt(jBits.W)
  val last = Bool()
  val buf = UInt(1.W)
  val bank = UInt(1.W)
}

/** The NPU: MAC schedule over the active weight bank, requantize, a ping-pong pair of logits buffers and a
  * top-k scan, and the load port. Consumes one vector per image from `in` with back-pressure.
  */
class Npu(val p: NpuSpec) extends Module {
  override def desiredName: String = p.moduleName
  import ModuleTable._
  ModuleTable.record(desiredName, "npu", "in_features" -> p.inFeatures, "in_width" -> p.inFmt.width,
    "capacity" -> p.capacity, "lanes" -> p.lanes, "width" -> p.width, "weight_bits" -> p.weightBits,
    "bias_bits" -> p.biasBits, "acc_width" -> p.accWidth, "out_bits" -> p.outBits, "shift_bits" -> p.shiftBits,
    "index_bits" -> p.indexBits, "top_k" -> p.topK, "scan" -> p.scan, "tiles" -> p.tiles, "chunks" -> p.chunks,
    "partial_sums" -> p.lanes * ((p.width + NpuSpec.PartialTerms - 1) / NpuSpec.PartialTerms))
  val in = IO(Flipped(Decoupled(Vec(p.inFeatures, UInt(p.inFmt.width.W)))))
  val out = IO(Decoupled(new NpuResult(p)))
  val load = IO(Flipped(Decoupled(new LoadWord)))
  val status = IO(Output(new NpuStatusPort))

  private val S = p.schedule
  private val J = p.chunks
  private val aw = p.accWidth
  private val stepBits = math.max(1, BigInt(S - 1).bitLength)

  // ---- weight banks, biases, runtime configuration (bank = 0/1; `active` serves, the other one loads)
  private val mem = Module(new NpuWeightMemory(2 * S, p.macs, p.weightBits))
  mem.idle()
  private val bias = Reg(Vec(2, Vec(p.capacity, SInt(p.biasBits.W))))
  private val cfgOut = Reg(Vec(2, UInt(16.W)))
  private val cfgShift = Reg(Vec(2, UInt(p.shiftBits.W)))
  private val cfgTag = RegInit(VecInit(Seq.fill(2)(0.U(32.W))))
  private val active = RegInit(0.U(1.W))
  private val activeValid = RegInit(false.B)
  private val pending = RegInit(false.B) // a committed image waits to become active
  private val shadow = ~active
  /** Bank b holds words [b * S, (b + 1) * S). */
  private def bankAddr(b: UInt, a: UInt): UInt = Mux(b.asBool, a +& S.U, a)

  // ---- engine registers
  private val xBuf = Reg(Vec(p.inFeatures, UInt(p.inFmt.width.W)))
  private val xFull = RegInit(false.B)
  private val xWork = Reg(Vec(p.inFeatures, UInt(p.inFmt.width.W)))
  private val busy = RegInit(false.B)
  private val step = RegInit(0.U(stepBits.W))
  private val t = RegInit(0.U(math.max(1, BigInt(p.tiles - 1).bitLength).W))
  private val j = RegInit(0.U(math.max(1, BigInt(J - 1).bitLength).W))
  private val bank = RegInit(0.U(1.W))  // weight bank of the image being issued
  private val cur = RegInit(0.U(1.W))   // its logits buffer
  private val nextBuf = RegInit(0.U(1.W))
  private object B extends ChiselEnum { val free, computing, scanning, ready = Value }
  private val bufState = RegInit(VecInit(Seq.fill(2)(B.free)))
  private val bufOut = Reg(Vec(2, UInt(16.W)))
  private val bufShift = Reg(Vec(2, UInt(p.shiftBits.W)))
  private val logits = Reg(Vec(2, Vec(p.capacity, UInt(p.outBits.W))))

  // stage B (memory data), P (products), Q (partial sums), C (dot products), D (a tile's sums) and E (rounded
  // sums): each stage's valid bit and the tag of the word it holds
  private val vB, vP, vQ, vC, vD, vE = RegInit(false.B)
  private val tagB, tagP, tagQ, tagC, tagD, tagE = Reg(new NpuTag(t.getWidth, j.getWidth))
  private val xB = Reg(Vec(p.width, UInt(p.inFmt.width.W)))
  private val dotC = Reg(Vec(p.lanes, SInt(aw.W)))
  private val acc = Reg(Vec(p.lanes, SInt(aw.W)))
  private val sumD = Reg(Vec(p.lanes, SInt(aw.W)))
  private val bhW = math.max(p.biasBits, p.maxShift) + 1 // a bias plus half of the requantizing shift's unit
  private val bhD = Reg(Vec(p.lanes, SInt(bhW.W)))
  private val rE = Reg(Vec(p.lanes, SInt((math.max(aw, bhW) + 1).W)))

  // ---- load port
  private val loader = Module(new NpuLoader(p))
  loader.io.in <> load
  private def inUse(b: UInt) =
    (busy && bank === b) ||
      Seq(vB -> tagB, vP -> tagP, vQ -> tagQ, vC -> tagC).map { case (v, g) => v && g.bank === b }.reduce(_ || _)
  loader.io.allowStart := !pending && !inUse(shadow)
  when(loader.io.weight.valid) {
    val wv = loader.io.weight.bits
    mem.write(bankAddr(shadow, wv.addr), wv.value, (0 until p.macs).map(e => wv.elem === e.U))
  }
  // banked arrays are indexed element by element (firtool lowers no muxes of whole arrays)
  private def pick[T <: Data](sel: UInt, v: Vec[Vec[T]], i: Int): T = Mux(sel.asBool, v(1)(i), v(0)(i))
  for (b <- 0 until 2; i <- 0 until p.capacity)
    when(loader.io.bias.valid && shadow === b.U && loader.io.bias.bits.index === i.U) {
      bias(b)(i) := loader.io.bias.bits.value
    }
  when(loader.io.commit.valid) {
    cfgOut(shadow) := loader.io.commit.bits.outFeatures
    cfgShift(shadow) := loader.io.commit.bits.shift
    cfgTag(shadow) := loader.io.commit.bits.tag
    pending := true.B
  }
  status.code := loader.io.code
  status.tag := Mux(activeValid, cfgTag(active), 0.U)

  // ---- issue (stage A): one memory word per cycle
  private val lastIssue = busy && step === (S - 1).U
  // starts are at least cyclesPerImage apart: a no-op unless the top-k scan sets the pace
  private val paced = if (p.cyclesPerImage > S) {
    val wait = RegInit(0.U(BigInt(p.cyclesPerImage).bitLength.W))
    when(wait =/= 0.U) { wait := wait - 1.U }
    (wait === 0.U, () => wait := (p.cyclesPerImage - 1).U)
  } else (true.B, () => ())
  private val start =
    xFull && (activeValid || pending) && bufState(nextBuf) === B.free && (!busy || lastIssue) && paced._1
  private val startBank = Mux(pending, shadow, active)
  when(pending && (start || !(busy || vB || vP || vQ || vC))) { // swap between images
    active := shadow; activeValid := true.B; pending := false.B
  }
  in.ready := !xFull || start
  when(start) {
    paced._2()
    xWork := xBuf
    xFull := false.B
    busy := true.B
    step := 0.U; t := 0.U; j := 0.U
    bank := startBank
    cur := nextBuf
    nextBuf := ~nextBuf
    bufState(nextBuf) := B.computing
    bufOut(nextBuf) := cfgOut(startBank)
    bufShift(nextBuf) := cfgShift(startBank)
  }.elsewhen(busy) {
    busy := !lastIssue
    step := step + 1.U
    val chunkEnd = j === (J - 1).U
    j := Mux(chunkEnd, 0.U, j + 1.U)
    when(chunkEnd) { t := t + 1.U }
  }
  when(in.fire) { xBuf := in.bits; xFull := true.B }

  private val rd = mem.read(bankAddr(bank, step), busy)
  for (q <- 0 until p.width) {
    xB(q) := Npu.select(j, (0 until J).map { c =>
      val i = c * p.width + q
      if (i < p.inFeatures) xWork(i) else 0.U(p.inFmt.width.W)
    })
  }
  vB := busy; tagB.t := t; tagB.j := j; tagB.last := lastIssue; tagB.buf := cur; tagB.bank := bank

  // ---- stage B: lanes x width products, registered (a multiplier and the dot-product tree in one cycle were the
  // NPU's slowest path: 1.55 ns at width 80, benchmarks/timing_npu.py)
  private def toS(x: UInt): SInt = if (p.inFmt.signed) x.asSInt else x.zext
  private val prodP = Reg(Vec(p.macs, SInt((p.inFmt.width + 1 + p.weightBits).W)))
  for (e <- 0 until p.macs) prodP(e) := toS(xB(e % p.width)) * rd(e)
  vP := vB; tagP := tagB

  // ---- stage P: the products summed per lane in groups of PartialTerms (the whole sum in one cycle was the NPU's
  // slowest path once the requantization had stages of its own: 1.09 ns at width 80)
  private val groups = (p.width + NpuSpec.PartialTerms - 1) / NpuSpec.PartialTerms
  private val partQ = Reg(Vec(p.lanes * groups, SInt(aw.W)))
  private def sumTree(xs: Seq[SInt]): SInt = VecInit(xs).reduceTree((a, b) => (a +& b)(aw - 1, 0).asSInt)
  for (l <- 0 until p.lanes; g <- 0 until groups) {
    val qs = (g * NpuSpec.PartialTerms until math.min(p.width, (g + 1) * NpuSpec.PartialTerms))
    partQ(l * groups + g) := sumTree(qs.map(q => prodP(l * p.width + q).pad(aw)))
  }
  vQ := vP; tagQ := tagP

  // ---- stage Q: the partial sums summed per lane
  vC := vQ; tagC := tagQ
  for (l <- 0 until p.lanes) dotC(l) := sumTree((0 until groups).map(g => partQ(l * groups + g)))

  // ---- stage C: accumulate; at a tile's last chunk its sums, and each output's bias plus the rounding half,
  // pass to stage D (accumulate, bias add, rounding add, shift and clamp in one cycle were the NPU's slowest path
  // once the products were registered: 1.25 ns at width 80, benchmarks/timing_npu.py)
  private val tileDone = vC && tagC.j === (J - 1).U
  private val half = ((1.U << bufShift(tagC.buf)) >> 1).zext
  for (l <- 0 until p.lanes) {
    val sum = (Mux(tagC.j === 0.U, 0.S(aw.W), acc(l)) +& dotC(l))(aw - 1, 0).asSInt
    when(vC) { acc(l) := sum }
    val b = Npu.select(tagC.t, (0 until p.tiles).map(tt => pick(tagC.bank, bias, math.min(tt * p.lanes + l, p.capacity - 1))))
    when(tileDone) { sumD(l) := sum; bhD(l) := b +& half }
  }
  vD := tileDone; tagD := tagC

  // ---- stage D: the rounding add (exact: the accumulator bound includes the bias)
  for (l <- 0 until p.lanes) rE(l) := sumD(l) +& bhD(l)
  vE := vD; tagE := tagD

  // ---- stage E: the requantizing shift and clamp; write the logits buffer
  private val oLo = -(BigInt(1) << (p.outBits - 1))
  private val oHi = (BigInt(1) << (p.outBits - 1)) - 1
  private val sh = bufShift(tagE.buf)
  private val q = (0 until p.lanes).map { l =>
    val r = rE(l) >> sh
    val y = Mux(r < oLo.S, oLo.S, Mux(r > oHi.S, oHi.S, r)).asUInt
    y(p.outBits - 1, 0)
  }
  for (b <- 0 until 2; i <- 0 until p.capacity) {
    when(vE && tagE.buf === b.U && tagE.t === (i / p.lanes).U) {
      logits(b)(i) := Mux(i.U < bufOut(b), q(i % p.lanes), 0.U)
    }
  }
  when(vE && tagE.last) { bufState(tagE.buf) := B.scanning }

  // ---- top-k scan of the buffers in image order, `scan` logits per cycle
  private val sb = RegInit(0.U(1.W))
  private val shown = (0 until p.capacity).map(i => pick(sb, logits, i))
  private val scanAt = RegInit(0.U(17.W))
  private def entry = new TopK.Entry(p.outBits, p.indexBits)
  private val top = Reg(Vec(p.topK, entry))
  when(bufState(sb) === B.scanning) {
    val base = top.map(e => Mux(scanAt === 0.U, 0.U.asTypeOf(entry), e))
    val after = (0 until p.scan).foldLeft(base: Seq[TopK.Entry]) { (list, s) =>
      val idx = scanAt + s.U
      val c = Wire(entry)
      c.valid := idx < bufOut(sb)
      c.value := Npu.select(idx, shown).asSInt
      c.index := idx(p.indexBits - 1, 0)
      TopK.insert(list, c)
    }
    top := VecInit(after.toSeq)
    val done = scanAt + p.scan.U >= bufOut(sb)
    scanAt := Mux(done, 0.U, scanAt + p.scan.U)
    when(done) { bufState(sb) := B.ready }
  }
  out.valid := bufState(sb) === B.ready
  out.bits.logits := VecInit(shown)
  out.bits.topk := VecInit(top.map(_.index))
  when(out.fire) { bufState(sb) := B.free; sb := ~sb }
}

object Npu {
  /** xs(idx) as a balanced tree of 2:1 muxes on idx's bits (an index past the end returns some element). */
  def select[T <: Data](idx: UInt, xs: Seq[T]): T = {
    var level = xs
    var b = 0
    while (level.length > 1) {
      val bit = if (b < idx.getWidth) idx(b) else false.B
      level = level.grouped(2).map(g => if (g.length == 2) Mux(bit, g(1), g(0)) else g(0)).toSeq
      b += 1
    }
    level.head
  }

  def apply(p: NpuSpec, x: DecoupledIO[Vec[UInt]]): Npu = {
    val m = Module(new Npu(p))
    m.in <> x
    m
  }
}

/** A design with an NPU head: the hardened backbone (Pipeline) feeding the NPU. */
class Accelerator(val d: DesignSpec) extends Module {
  private val n = d.npu.getOrElse(throw DesignError("design.npu: an Accelerator needs an npu section"))
  override def desiredName: String = s"Hashiflex_${d.name}"
  val in = IO(Flipped(Decoupled(Vec(d.input.par * d.input.shape.c, UInt(d.input.fmt.width.W)))))
  val out = IO(Decoupled(new NpuResult(n)))
  val load = IO(Flipped(Decoupled(new LoadWord)))
  val status = IO(Output(new NpuStatusPort))
  private val backbone = Module(new Pipeline(d))
  backbone.in <> in
  private val npu = Npu(n, backbone.out)
  out <> npu.out
  npu.load <> load
  status := npu.status
}
