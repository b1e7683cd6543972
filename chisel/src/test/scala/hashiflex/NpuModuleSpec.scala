package hashiflex

import chisel3._
import chisel3.simulator.EphemeralSimulator._
import org.scalatest.freespec.AnyFreeSpec
import org.scalatest.matchers.should.Matchers

import scala.util.Random

object NpuModuleSpec {
  final case class Head(w: Seq[Seq[Int]], b: Seq[Int], shift: Int, tag: Long)
}

/** The NPU on its own: the load port's checks and commit, and the logits/top-k it computes, against a Scala model. */
class NpuModuleSpec extends AnyFreeSpec with Matchers {
  import NpuModuleSpec.Head
  private val in = Bounds(0, 15)
  private val p = NpuSpec(inFeatures = 3, inFmt = NumFmt.forBounds(in), capacity = 5, lanes = 2, width = 2,
    weightBits = 4, biasBits = 8, accWidth = NpuSpec.accWidthFor(3, in, 4, 8), outBits = 6,
    maxShift = NpuSpec.accWidthFor(3, in, 4, 8) - 1, topK = 2, scan = 1)


  /** The load image (hashiflex.npu.encode). */
  private def image(h: Head): Seq[Long] = {
    val body = Seq(NpuStatus.Magic, (NpuStatus.ImageVersion << 16 | p.weightBits << 8 | p.biasBits).toLong,
      (p.inFeatures << 16 | h.w.length).toLong, h.shift.toLong, h.tag) ++
      (h.w.flatten ++ h.b).map(v => v.toLong & 0xFFFFFFFFL)
    body :+ Crc32.of(body)
  }

  /** logits and top-k, as hashiflex.npu.run_head / top_k compute them. */
  private def model(h: Head, x: Seq[Int]): (Seq[BigInt], Seq[Int]) = {
    val lo = -(BigInt(1) << (p.outBits - 1)); val hi = (BigInt(1) << (p.outBits - 1)) - 1
    val logits = h.w.indices.map { o =>
      val acc = h.w(o).zip(x).map { case (w, v) => BigInt(w) * v }.sum + h.b(o)
      val r = if (h.shift == 0) acc else (acc + (BigInt(1) << (h.shift - 1))) >> h.shift
      r.max(lo).min(hi)
    }
    (logits, logits.zipWithIndex.sortBy { case (v, i) => (-v, i) }.take(p.topK).map(_._2))
  }

  private def randomHead(rng: Random, tag: Long): Head = {
    val o = p.topK + rng.nextInt(p.capacity - p.topK + 1)
    Head(Seq.fill(o, p.inFeatures)(rng.nextInt(16) - 8), Seq.fill(o)(rng.nextInt(256) - 128), rng.nextInt(6), tag)
  }

  private def withNpu(body: Npu => Unit): Unit = simulate(new Npu(p)) { dut =>
    dut.reset.poke(true.B); dut.clock.step(2); dut.reset.poke(false.B)
    dut.in.valid.poke(false.B); dut.load.valid.poke(false.B); dut.out.ready.poke(false.B)
    body(dut)
  }

  private def load(dut: Npu, words: Seq[Long]): Int = {
    var i = 0
    var guard = 0
    while (i < words.length) {
      dut.load.valid.poke(true.B)
      dut.load.bits.data.poke(words(i).U(32.W))
      dut.load.bits.last.poke((i == words.length - 1).B)
      if (dut.load.ready.peek().litToBoolean) i += 1
      dut.clock.step()
      guard += 1
      require(guard < 10 * words.length + 100, "load port stalled")
    }
    dut.load.valid.poke(false.B)
    dut.clock.step(2)
    dut.status.code.peek().litValue.toInt
  }

  private def infer(dut: Npu, x: Seq[Int]): (Seq[BigInt], Seq[Int]) = {
    x.zipWithIndex.foreach { case (v, i) => dut.in.bits(i).poke(v.U) }
    dut.in.valid.poke(true.B)
    var guard = 0
    while (!dut.in.ready.peek().litToBoolean) { dut.clock.step(); guard += 1; require(guard < 1000) }
    dut.clock.step()
    dut.in.valid.poke(false.B)
    dut.out.ready.poke(true.B)
    while (!dut.out.valid.peek().litToBoolean) { dut.clock.step(); guard += 1; require(guard < 1000, "no result") }
    val w = p.outBits
    val logits = (0 until p.capacity).map { i =>
      val raw = dut.out.bits.logits(i).peek().litValue
      if (raw.testBit(w - 1)) raw - (BigInt(1) << w) else raw
    }
    val top = (0 until p.topK).map(i => dut.out.bits.topk(i).peek().litValue.toInt)
    dut.clock.step()
    dut.out.ready.poke(false.B)
    (logits, top)
  }

  "CRC-32 matches zlib.crc32 of the words' little-endian bytes" in {
    Crc32.of(Seq(0x48464E31L, 1L, 0xFFFFFFFFL, 12345678L)) shouldBe 0xB16001FAL // python: zlib.crc32
  }

  "random heads, loaded one after another into one running NPU, compute what the model says" in {
    val rng = new Random(7)
    withNpu { dut =>
      dut.status.code.peek().litValue shouldBe NpuStatus.Empty
      for (n <- 1 to 6) {
        val h = randomHead(rng, n)
        load(dut, image(h)) shouldBe NpuStatus.Ok
        dut.status.tag.peek().litValue shouldBe n
        for (_ <- 0 until 3) {
          val x = Seq.fill(p.inFeatures)(rng.nextInt(16))
          val (logits, top) = infer(dut, x)
          val (want, wantTop) = model(h, x)
          logits.take(want.length) shouldBe want
          all(logits.drop(want.length)) shouldBe 0
          top shouldBe wantTop
        }
      }
    }
  }

  "a bad image is refused with its status code and the old head keeps serving" in {
    val rng = new Random(3)
    val h = randomHead(rng, 42)
    val good = image(h)
    val x = Seq(15, 3, 9)
    val cases = Seq(
      "bad magic" -> (good.updated(0, 0L), NpuStatus.BadMagic),
      "bad version" -> (good.updated(1, good(1) + (1L << 16)), NpuStatus.BadVersion),
      "bad bits" -> (good.updated(1, good(1) + (1L << 8)), NpuStatus.BadBits),
      "more outputs than the capacity" -> (good.updated(2, (p.inFeatures << 16 | 6).toLong), NpuStatus.BadShape),
      "fewer outputs than top_k" -> (good.updated(2, (p.inFeatures << 16 | 1).toLong), NpuStatus.BadShape),
      "wrong in_features" -> (good.updated(2, (4 << 16 | h.w.length).toLong), NpuStatus.BadShape),
      "shift past the accumulator" -> (good.updated(3, (p.maxShift + 1).toLong), NpuStatus.BadShift),
      "weight out of range" -> (good.updated(5, 8L), NpuStatus.BadValue),
      "truncated" -> (good.dropRight(2), NpuStatus.TooShort),
      "too long" -> (good :+ 0L, NpuStatus.TooLong),
      "corrupt payload" -> (good.updated(6, good(6) ^ 1L), NpuStatus.BadChecksum))
    withNpu { dut =>
      load(dut, good) shouldBe NpuStatus.Ok
      val before = infer(dut, x)
      val (want, wantTop) = model(h, x)
      before shouldBe ((want ++ Seq.fill(p.capacity - want.length)(BigInt(0)), wantTop))
      for ((what, (words, code)) <- cases) withClue(what) {
        load(dut, words) shouldBe code
        dut.status.tag.peek().litValue shouldBe 42
        infer(dut, x) shouldBe before
      }
      load(dut, good) shouldBe NpuStatus.Ok // and a good one is taken again
    }
  }
}
