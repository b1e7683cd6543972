package hashiflex

import org.scalatest.freespec.AnyFreeSpec
import org.scalatest.matchers.should.Matchers

import scala.util.Random

/** The adder graph plan (pure Scala): sharing, counts, exact intervals. The same cases as
  * tests/test_passes.py, so the Python model and the generator agree by construction and by test.
  */
class SharedPlanSpec extends AnyFreeSpec with Matchers {
  private val in = Bounds(-8, 7)
  private def plan(codes: Seq[Seq[Int]], bias: Seq[Int], share: Boolean = true) =
    SharedPlan(codes.head.length, in, codes.zip(bias).map { case (c, b) => (Term.slots(c), BigInt(b)) }, share)

  "signs fold, zeros are free, an all-negative channel pays one negation" in {
    val p = plan(Seq(Seq(1, -2, 0, 3), Seq(0, 0, 0, 0), Seq(-1, -1, 0, 0), Seq(-1, 0, 0, 0)), Seq(0, 5, 0, 0), share = false)
    (p.adders, p.unsharedAdders, p.depth) shouldBe ((5, 5, 3))
  }
  "equal subtrees up to a shift and a sign are built once" in {
    val p = plan(Seq(Seq(1, 2, 1, 0), Seq(3, 4, 0, 0), Seq(-2, -3, 0, 1)), Seq(0, 0, 7))
    p.unsharedAdders shouldBe 6
    p.adders shouldBe 4
  }
  "the plan's intervals are the exact dot-product bounds, shared or not" in {
    val rnd = new Random(5)
    for (_ <- 0 until 50) {
      val n = rnd.between(1, 9)
      val codes = Seq.fill(rnd.between(1, 6))(Seq.fill(n)(if (rnd.nextDouble() < 0.3) 0 else rnd.between(-7, 8)))
      val bias = Seq.fill(codes.length)(rnd.between(-20, 21))
      val exact = codes.zip(bias).map { case (c, b) =>
        val w = c.map(x => if (x == 0) BigInt(0) else (BigInt(1) << (math.abs(x) - 1)) * x.sign)
        val lo = w.map(v => if (v > 0) v * in.lo else v * in.hi).sum + b
        val hi = w.map(v => if (v > 0) v * in.hi else v * in.lo).sum + b
        Bounds(lo, hi)
      }.reduce(_ union _)
      plan(codes, bias).value shouldBe exact
      plan(codes, bias, share = false).value shouldBe exact
      plan(codes, bias).adders should be <= plan(codes, bias, share = false).adders
    }
  }
}
