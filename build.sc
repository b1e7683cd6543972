// Mill build for the hashiflex Chisel generator (sources in chisel/).
//   ./mill hashiflex.run --design build/design.json --out build/rtl
//   ./mill hashiflex.test
import mill._
import mill.scalalib._

object Versions {
  val scala     = "2.13.15"
  val chisel    = "6.7.0"
  val scalatest = "3.2.19"
}

object hashiflex extends SbtModule { m =>
  // The user fixed the layout: the Scala sources live in chisel/, not in hashiflex/ (that is the Python package).
  override def millSourcePath = super.millSourcePath / os.up / "chisel"
  def scalaVersion = Versions.scala
  def mainClass = Some("hashiflex.Main")
  def scalacOptions = Seq("-deprecation", "-feature", "-unchecked", "-language:reflectiveCalls", "-Ymacro-annotations")
  def ivyDeps = Agg(mvn"org.chipsalliance::chisel:${Versions.chisel}")
  def scalacPluginIvyDeps = Agg(mvn"org.chipsalliance:::chisel-plugin:${Versions.chisel}")
  // Elaboration of big designs wants memory; tests fork too. The heap-free ratios let the JVM return its heap
  // after Chisel has written the FIRRTL, while firtool runs (Main.elaborate).
  def forkArgs = Seq("-Xss64m", "-Xmx12g", "-XX:+UseG1GC", "-XX:MinHeapFreeRatio=5", "-XX:MaxHeapFreeRatio=15")

  object test extends SbtTests with TestModule.ScalaTest {
    def ivyDeps = Agg(mvn"org.scalatest::scalatest:${Versions.scalatest}")
    // GoldenVectorSpec reads the vectors `make vectors` writes (from the Python golden model)
    def forkArgs = m.forkArgs() :+ s"-Dhashiflex.vectors=${mill.api.BuildCtx.workspaceRoot / "build" / "vectors"}"
  }
}
